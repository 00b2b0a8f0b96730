#pragma once
// The tables the evaluations print: a row per method, a column per variant (Dense, FastSPADE,
// SPADE), an average row, and, when the first variant is Dense, each sparse variant's difference
// to Dense with its standard error over the samples (starred when significant).
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/trojan_options.h"

namespace spade::cli {

struct VariantTable {
  std::string markdown;             // header, rows, average row
  std::vector<int> better, worse;   // per variant: methods significantly above / below Dense
  nlohmann::json differences;       // [method][variant key] = {mean, se, significant}
};

// `value(k, v)`: the cell of method k, variant v. `samples(k, v)`: the per-sample values whose
// mean difference to Dense's is reported (empty function: no difference columns).
VariantTable variant_table(const std::vector<std::string>& methods, const std::vector<Variant>& variants,
                           const std::function<double(size_t, size_t)>& value,
                           const std::function<std::vector<double>(size_t, size_t)>& samples = {});

// "FastSPADE beats Dense on W of M methods; significantly better on B and worse on S." lines.
std::string wins_summary(const VariantTable& t, const std::vector<std::string>& methods, const std::vector<Variant>& variants,
                         const std::function<double(size_t, size_t)>& value, const std::string& what);

}  // namespace spade::cli
