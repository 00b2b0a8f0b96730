#include "apps/variant_table.h"

#include <cstdio>
#include <sstream>

#include "interpret/metrics/paired_difference.h"

namespace spade::cli {

namespace {

std::string f2(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

}  // namespace

VariantTable variant_table(const std::vector<std::string>& methods, const std::vector<Variant>& variants,
                           const std::function<double(size_t, size_t)>& value,
                           const std::function<std::vector<double>(size_t, size_t)>& samples) {
  const size_t M = methods.size(), V = variants.size();
  const bool diffs = samples && V > 1 && variants[0].dense;
  VariantTable t;
  t.better.assign(V, 0);
  t.worse.assign(V, 0);
  t.differences = nlohmann::json::object();
  std::ostringstream md;
  md << "| method |";
  for (const Variant& v : variants) md << " " << v.title << " |";
  if (diffs)
    for (size_t v = 1; v < V; ++v) md << " " << variants[v].title << " - Dense (SE) |";
  md << "\n| --- |";
  for (size_t v = 0; v < V + (diffs ? V - 1 : 0); ++v) md << " --- |";
  md << "\n";
  std::vector<double> avg(V, 0.0);
  for (size_t k = 0; k < M; ++k) {
    md << "| " << methods[k] << " |";
    for (size_t v = 0; v < V; ++v) {
      md << " " << f2(value(k, v)) << " |";
      avg[v] += value(k, v) / double(M);
    }
    if (diffs) {
      const std::vector<double> dense = samples(k, 0);
      for (size_t v = 1; v < V; ++v) {
        const interp::PairedDifference d = interp::paired_difference(samples(k, v), dense);
        md << " " << (d.mean >= 0 ? "+" : "") << f2(d.mean) << " (" << f2(d.se) << ")" << (d.significant() ? " *" : "") << " |";
        t.differences[methods[k]][variants[v].key] = {{"mean", d.mean}, {"se", d.se}, {"significant", d.significant()}};
        if (d.significant()) (d.mean > 0 ? t.better : t.worse)[v] += 1;
      }
    }
    md << "\n";
  }
  md << "| **average** |";
  for (size_t v = 0; v < V; ++v) md << " **" << f2(avg[v]) << "** |";
  if (diffs)
    for (size_t v = 1; v < V; ++v) md << " |";
  md << "\n";
  t.markdown = md.str();
  return t;
}

std::string wins_summary(const VariantTable& t, const std::vector<std::string>& methods, const std::vector<Variant>& variants,
                         const std::function<double(size_t, size_t)>& value, const std::string& what) {
  if (variants.size() < 2 || !variants[0].dense) return "";
  std::ostringstream md;
  for (size_t v = 1; v < variants.size(); ++v) {
    int wins = 0;
    for (size_t k = 0; k < methods.size(); ++k) wins += value(k, v) > value(k, 0);
    md << "\n" << variants[v].title << " beats Dense on " << wins << " of " << methods.size() << " methods (" << what
       << "); significantly (|difference| > 1.96 SE, marked *) better on " << t.better[v] << " and worse on "
       << t.worse[v] << ".";
  }
  md << "\n";
  return md.str();
}

}  // namespace spade::cli
