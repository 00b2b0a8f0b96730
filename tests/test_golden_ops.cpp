// Every op, forward and backward, against PyTorch (tests/data/golden/ops.golden.safetensors,
// made by tests/data/make_golden.py).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "engine/executor.h"
#include "engine/ops.h"
#include "formats/safetensors.h"
#include "support/test_support.h"

using namespace spade;
using nlohmann::json;

namespace {

std::array<int64_t, 2> pair_attr(const json& a, const char* key, std::array<int64_t, 2> def) {
  if (!a.contains(key)) return def;
  const json& v = a.at(key);
  if (v.is_number_integer()) return {v.get<int64_t>(), v.get<int64_t>()};
  return {v.at(0).get<int64_t>(), v.at(1).get<int64_t>()};
}

// [ph, pw], [top, left, bottom, right] or "same"
Padding padding_attr(const json& a) {
  if (!a.contains("padding")) return {};
  const json& v = a.at("padding");
  if (v.is_string()) {
    REQUIRE(v.get<std::string>() == "same");
    return Padding::tf_same();
  }
  if (v.size() == 4) return {v[0].get<int64_t>(), v[1].get<int64_t>(), v[2].get<int64_t>(), v[3].get<int64_t>()};
  const std::array<int64_t, 2> p = pair_attr(a, "padding", {0, 0});
  return {p[0], p[1]};
}

OpAttrs attrs_from(const json& a, OpKind op) {
  OpAttrs o;
  o.in_channels = a.value("in_channels", a.value("num_features", int64_t{0}));
  o.out_channels = a.value("out_channels", int64_t{0});
  o.kernel = pair_attr(a, "kernel", {1, 1});
  o.stride = pair_attr(a, "stride", op == OpKind::Conv2d ? std::array<int64_t, 2>{1, 1} : o.kernel);
  o.padding = padding_attr(a);
  o.dilation = pair_attr(a, "dilation", {1, 1});
  o.groups = a.value("groups", int64_t{1});
  o.bias = a.value("bias", false);
  o.eps = a.value("eps", 1e-5f);
  o.momentum = a.value("momentum", 0.1f);
  o.ceil_mode = a.value("ceil_mode", false);
  o.count_include_pad = a.value("count_include_pad", true);
  return o;
}

void check_close(const std::string& what, const Tensor& got, const Tensor& want, double tol) {
  INFO(what << ": shape " << shape_str(got.shape()) << " vs " << shape_str(want.shape()));
  REQUIRE(got.shape() == want.shape());
  const double err = test::max_rel_error(got, want);
  INFO(what << ": max relative error " << err);
  CHECK(err <= tol);
}

}  // namespace

TEST_CASE("every op matches PyTorch forward and backward", "[golden][ops]") {
  SafetensorsFile f(test::data_path("golden/ops.golden.safetensors"));
  json cases = json::parse(f.metadata().at("cases"));
  REQUIRE(cases.size() >= 30);
  int checked = 0;
  for (const json& c : cases) {
    const std::string key = c.at("key");
    const std::string opname = c.at("op");
    DYNAMIC_SECTION(key) {
      const json attrs = c.value("attrs", json::object());
      const OpKind op = op_from_name(opname);
      const bool train = attrs.value("train", false);
      Graph g;
      const Tensor x = f.tensor(key + ".x");
      if (x.ndim() == 4) g.input_chw = {x.dim(1), x.dim(2), x.dim(3)};
      // Linear and 2-D activations take (N, F) inputs: feed them through a flatten of a (N,F,1,1) input.
      Tensor xin = x;
      std::string src = "input";
      if (x.ndim() == 2) {
        xin = x.reshape({x.dim(0), x.dim(1), 1, 1});
        g.input_chw = {x.dim(1), 1, 1};
        g.add("flat", OpKind::Flatten, OpAttrs{}, {"input"});
        src = "flat";
      }
      if (op == OpKind::Add) {  // two graph inputs do not exist: run the node and its rule directly
        const Tensor x2 = f.tensor(key + ".x2");
        Node n;
        n.name = "add";
        n.op = OpKind::Add;
        Tensor out = node_forward(n, {&x, &x2}, nullptr, false, 0, nullptr);
        check_close(key + " out", out, f.tensor(key + ".out"), 1e-6);
        const Tensor gout = f.tensor(key + ".gout");
        BackwardContext ctx{n, {&x, &x2}, out, gout, nullptr, false, 0, {true, true}, false};
        BackwardOutputs bo;
        gradient_rule(ctx, bo);
        check_close(key + " gx", bo.input_grads[0], f.tensor(key + ".gx"), 1e-6);
        check_close(key + " gx2", bo.input_grads[1], f.tensor(key + ".gx2"), 1e-6);
        ++checked;
        return;
      }
      g.add("op", op, attrs_from(attrs, op), {src});
      Node& node = g.node(g.at("op"));
      for (auto& [pname, t] : node.params) {
        REQUIRE(f.contains(key + "." + pname));
        t = f.tensor(key + "." + pname);
      }
      ForwardResult fwd = train ? forward_train(g, xin) : forward(g, xin);
      Tensor out = fwd.out();
      const Tensor want_out = f.tensor(key + ".out");
      check_close(key + " out", out.reshape(want_out.shape()), want_out, 1e-5);
      if (train && op == OpKind::BatchNorm2d) {
        check_close(key + " running_mean", node.params.at("running_mean"), f.tensor(key + ".new_running_mean"), 1e-5);
        check_close(key + " running_var", node.params.at("running_var"), f.tensor(key + ".new_running_var"), 1e-5);
      }
      BackwardOptions bo;
      bo.param_grads = true;
      const Tensor gout = f.tensor(key + ".gout").reshape(out.shape());
      BackwardResult b = backward(g, fwd, g.output(), gout, bo);
      check_close(key + " gx", b.input_grad.reshape(x.shape()), f.tensor(key + ".gx"), 1e-5);
      for (const char* p : {"weight", "bias"})
        if (f.contains(key + ".g" + p)) check_close(key + " g" + p, b.param_grads.at("op." + std::string(p)), f.tensor(key + ".g" + p), 1e-5);
      ++checked;
    }
  }
}
