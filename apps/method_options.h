#pragma once
// The saliency-method options shared by `spade explain` and `spade eval saliency`: the method
// list, the preset, and every method parameter, with the settings recorded in JSON.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "interpret/saliency/methods.h"

namespace spade::cli {

// --preset and the method parameters (--steps, --samples, ... --lrp-epsilon).
void add_method_options(std::vector<Option>& opts);

// "all", or a comma-separated list of method names (each checked).
std::vector<std::string> parse_methods(const std::string& arg);

// The preset's parameters for `method`, then every method option given explicitly; the image
// normalisation comes from the model.
interp::MethodParams method_params(const Args& a, const std::string& method, const Model& m);

// The settings that define one method's output (what a reader needs to reproduce it).
nlohmann::json settings_json(const std::string& method, const interp::MethodParams& p);

}  // namespace spade::cli
