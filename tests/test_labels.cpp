// Class labels with ids: labels files (.tsv and .txt), --target lookup by index, id or name,
// ImageFolder class folders mapped by id, and the padding forms of the model JSON.
#include <catch2/catch.hpp>

#include <filesystem>

#include "engine/executor.h"
#include "engine/ops.h"
#include "formats/file_io.h"
#include "formats/image_folder.h"
#include "formats/labels.h"
#include "formats/model.h"
#include "support/test_support.h"

using namespace spade;
using Catch::Matchers::Contains;

namespace {

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = join_path(test::temp_dir(), name);
  write_file_atomic(path, text);
  return path;
}

const std::vector<std::string> kNames = {"background", "tench, Tinca tinca", "goldfish, Carassius auratus",
                                         "crane", "crane, derrick"};
const std::vector<std::string> kIds = {"", "n01440764", "n01443537", "n02012849", "n03126707"};

}  // namespace

TEST_CASE("labels files: TSV with a header, bare TSV rows and Caffe's synset_words.txt", "[labels]") {
  SECTION("header row (the ../shared classes.tsv layout)") {
    const Labels l = read_labels_file(
        write_temp("c.tsv", "index\twnid\tname\n0\t-\tbackground\n1\tn01440764\ttench, Tinca tinca\n\n"));
    CHECK(l.names == std::vector<std::string>{"background", "tench, Tinca tinca"});
    CHECK(l.ids == std::vector<std::string>{"", "n01440764"});
    CHECK(l.has_ids());
  }
  SECTION("header with other column order") {
    const Labels l = read_labels_file(write_temp("c.tsv", "name\tid\r\ncat\tc1\r\ndog\t\r\n"));
    CHECK(l.names == std::vector<std::string>{"cat", "dog"});
    CHECK(l.ids == std::vector<std::string>{"c1", ""});
  }
  SECTION("rows without a header: id<TAB>name") {
    const Labels l = read_labels_file(write_temp("c.tsv", "n01440764\ttench\nn01443537\tgoldfish\n"));
    CHECK(l.names == std::vector<std::string>{"tench", "goldfish"});
    CHECK(l.ids[1] == "n01443537");
  }
  SECTION("synset_words.txt") {
    const Labels l = read_labels_file(write_temp("s.txt", "n01440764 tench, Tinca tinca\nn01443537 goldfish\n"));
    CHECK(l.names == std::vector<std::string>{"tench, Tinca tinca", "goldfish"});
    CHECK(l.ids == std::vector<std::string>{"n01440764", "n01443537"});
  }
  SECTION("plain names, one per line") {
    const Labels l = read_labels_file(write_temp("n.txt", "airplane\nmy class 2\n"));
    CHECK(l.names == std::vector<std::string>{"airplane", "my class 2"});
    CHECK_FALSE(l.has_ids());
  }
  SECTION("errors name the file and the line") {
    CHECK_THROWS_WITH(read_labels_file(write_temp("bad.tsv", "index\tid\tname\n0\ta\tx\n5\tb\ty\n")),
                      Contains("bad.tsv: line 3") && Contains("index \"5\", expected 1"));
    CHECK_THROWS_WITH(read_labels_file(write_temp("bad2.tsv", "a\tb\nc\n")),
                      Contains("bad2.tsv: line 2") && Contains("1 tab-separated fields, expected 2"));
    CHECK_THROWS_WITH(read_labels_file(write_temp("empty.txt", "\n\n")), Contains("empty.txt: no labels"));
    CHECK_THROWS_WITH(read_labels_file(join_path(test::temp_dir(), "missing.tsv")), Contains("missing.tsv"));
  }
}

TEST_CASE("find_class takes an index, an id or a name and explains what it cannot resolve", "[labels]") {
  CHECK(find_class(kNames, kIds, "2", "--target") == 2);
  CHECK(find_class(kNames, kIds, "n01440764", "--target") == 1);
  CHECK(find_class(kNames, kIds, "tench", "--target") == 1);                    // a synonym
  CHECK(find_class(kNames, kIds, "Carassius auratus", "--target") == 2);        // another, any case
  CHECK(find_class(kNames, kIds, "goldfish, carassius auratus", "--target") == 2);  // the whole name
  CHECK(find_class(kNames, kIds, "derrick", "--target") == 4);
  CHECK(find_class(kNames, {}, "1", "--target") == 1);  // a model without ids
  // "crane" is a whole name (index 3) and a synonym of index 4: the whole name wins.
  CHECK(find_class(kNames, kIds, "crane", "--target") == 3);
  CHECK_THROWS_WITH(find_class(kNames, kIds, "5", "--target"), Contains("--target 5 is out of range [0, 5)"));
  CHECK_THROWS_WITH(find_class(kNames, kIds, "-1", "--target"), Contains("out of range"));
  CHECK_THROWS_WITH(find_class(kNames, kIds, "99999999999999999999999", "--target"), Contains("out of range"));
  CHECK_THROWS_WITH(find_class(kNames, kIds, "tenhc", "--target"),
                    Contains("\"tenhc\" names no class") && Contains("1 \"tench, Tinca tinca\" (n01440764)"));
  CHECK_THROWS_WITH(find_class(kNames, kIds, "zebra", "--target"), Contains("names no class"));
  const std::vector<std::string> twins = {"crane, bird", "crane, machine"};
  CHECK_THROWS_WITH(find_class(twins, {}, "crane", "--target"),
                    Contains("ambiguous") && Contains("0 \"crane, bird\"") && Contains("1 \"crane, machine\""));
}

TEST_CASE("class folders map to outputs by id, by name, else in order", "[labels][image_folder]") {
  const std::string root = test::temp_dir() + "/set";
  const std::vector<uint8_t> png = read_file(test::data_path("image/src.png"));
  for (const char* folder : {"n01443537", "n01440764"}) {
    std::filesystem::create_directories(root + "/" + folder);
    write_file_atomic(root + "/" + folder + "/a.png", png.data(), png.size());
  }
  ImageFolder data(root);
  REQUIRE(data.classes() == std::vector<std::string>{"n01440764", "n01443537"});
  // By id: folder n01440764 -> output 1, n01443537 -> 2 (output 0 is the background).
  CHECK(model_class_indices(data, kNames, kIds) == std::vector<int64_t>{1, 2});
  // Without ids the folders are neither ids nor names: by position, only when the counts agree.
  CHECK(model_class_indices(data, {"a", "b"}) == std::vector<int64_t>{0, 1});
  CHECK_THROWS_WITH(model_class_indices(data, kNames), Contains("2 class folders") && Contains("5 classes"));
  // A folder that matches no id is named in the error.
  const std::vector<std::string> other_ids = {"", "n01440764", "x", "y", "z"};
  CHECK_THROWS_WITH(model_class_indices(data, kNames, other_ids),
                    Contains("class folder \"n01443537\" matches no class id"));
}

TEST_CASE("labels from a file on a model: ids kept through convert, count checked", "[labels][model]") {
  const std::string dir = test::temp_dir();
  LoadOptions lo;
  lo.random_init_seed = 1;
  lo.zoo.num_classes = 3;
  lo.zoo.width = 0.25;
  lo.labels_file = write_temp("three.tsv", "id\tname\na1\tcat\na2\tdog\na3\tbird\n");
  Model m = load_model("mobilenet_v2_tf", lo);
  CHECK(m.labels == std::vector<std::string>{"cat", "dog", "bird"});
  CHECK(m.label_ids == std::vector<std::string>{"a1", "a2", "a3"});
  save_model(m, dir + "/m.json");
  const Model back = load_model(dir + "/m.json");
  CHECK(back.labels == m.labels);
  CHECK(back.label_ids == m.label_ids);
  lo.labels_file = write_temp("two.txt", "cat\ndog\n");
  CHECK_THROWS_WITH(load_model("mobilenet_v2_tf", lo), Contains("two.txt: 2 labels, but the model") && Contains("3 outputs"));
}

TEST_CASE("the built-in mobilenet_v2_tf: SAME padding, 1001 classes, [-1, 1] inputs", "[model][padding]") {
  const Model m = load_model("mobilenet_v2_tf");
  REQUIRE(m.labels.size() == 1001);
  CHECK(m.labels[0] == "background");
  CHECK(m.labels[1] == "tench");  // torchvision's short names, compiled in
  CHECK(m.preprocess.mean == std::array<float, 3>{0.5f, 0.5f, 0.5f});
  CHECK(m.preprocess.std == std::array<float, 3>{0.5f, 0.5f, 0.5f});
  // The five stride-2 3x3 convs pad 0 before and 1 after at 224x224; stride-1 3x3 convs 1 each side.
  const std::vector<Shape> shapes = m.graph.infer_shapes(1);
  int stride2 = 0;
  for (int i = 1; i < m.graph.size(); ++i) {
    const Node& n = m.graph.node(i);
    if (n.op != OpKind::Conv2d || n.attrs.kernel[0] != 3) continue;
    const Shape& in = shapes[n.inputs[0]];
    const Padding p = resolve_padding(n.attrs, in[2], in[3]);
    INFO(n.name);
    if (n.attrs.stride[0] == 2) {
      ++stride2;
      CHECK(p == Padding(0, 0, 1, 1));
    } else {
      CHECK(p == Padding(1, 1));
    }
  }
  CHECK(stride2 == 5);
  CHECK(shapes[m.graph.output()] == Shape{1, 1001});
  // An odd input size pads 1 on each side of a stride-2 conv (output ceil(225 / 2) = 113).
  Graph odd = m.graph;
  odd.input_chw = {3, 225, 225};
  CHECK(odd.infer_shapes(1)[odd.at("features.0.0")] == Shape{1, 32, 113, 113});
}

TEST_CASE("model JSON padding: [ph, pw], [top, left, bottom, right] and \"same\" round trip", "[model][padding]") {
  const std::string spec = R"({
    "format": "spade-model", "version": 1, "input": [3, 9, 8],
    "nodes": [
      {"name": "a", "op": "conv2d", "inputs": ["input"], "in_channels": 3, "out_channels": 4, "kernel": 3, "stride": 2, "padding": "same"},
      {"name": "b", "op": "conv2d", "inputs": ["a"], "in_channels": 4, "out_channels": 4, "kernel": 3, "padding": [0, 1, 2, 1]},
      {"name": "c", "op": "maxpool2d", "inputs": ["b"], "kernel": 2, "padding": [1, 0, 0, 1]},
      {"name": "d", "op": "avgpool2d", "inputs": ["c"], "kernel": 3, "stride": 2, "padding": "same", "count_include_pad": false},
      {"name": "e", "op": "conv2d", "inputs": ["d"], "in_channels": 4, "out_channels": 2, "kernel": 1, "padding": [0, 0]}
    ]})";
  Model m = parse_model_json(spec, "pad.json");
  CHECK(m.graph.node(m.graph.at("a")).attrs.padding.same);
  CHECK(m.graph.node(m.graph.at("b")).attrs.padding == Padding(0, 1, 2, 1));
  CHECK(m.graph.node(m.graph.at("e")).attrs.padding == Padding(0, 0));
  const std::vector<Shape> shapes = m.graph.infer_shapes(2);
  CHECK(shapes[m.graph.at("a")] == Shape{2, 4, 5, 4});  // ceil(9/2), ceil(8/2)
  CHECK(shapes[m.graph.at("b")] == Shape{2, 4, 5, 4});  // 5+0+2-2, 4+1+1-2
  CHECK(shapes[m.graph.at("c")] == Shape{2, 4, 3, 2});  // (5+1-2)/2+1, (4+1-2)/2+1
  CHECK(shapes[m.graph.at("d")] == Shape{2, 4, 2, 1});
  // Written back in the same forms, and the same function.
  random_init(m.graph, 3);
  const std::string dir = test::temp_dir();
  save_model(m, dir + "/pad.json");
  const std::string text = test::slurp(dir + "/pad.json");
  CHECK_THAT(text, Contains("\"same\""));
  const Model back = load_model(dir + "/pad.json");
  for (int i = 1; i < m.graph.size(); ++i) CHECK(back.graph.node(i).attrs.padding == m.graph.node(i).attrs.padding);
  const Tensor x = test::random_tensor({2, 3, 9, 8}, 4);
  CHECK(test::max_abs_error(forward(back.graph, x).out(), forward(m.graph, x).out()) == 0.0);

  auto fails = [](const std::string& padding, const std::string& needle, const char* op = "conv2d") {
    const std::string text = std::string(R"({"format": "spade-model", "input": [3, 8, 8], "nodes": [{"name": "p", "op": ")") +
                             op + R"(", "inputs": ["input"], "in_channels": 3, "out_channels": 4, "kernel": 3, "padding": )" +
                             padding + "}]}";
    INFO(text);
    REQUIRE_THROWS_WITH(parse_model_json(text, "bad.json"), Contains("bad.json") && Contains(needle));
  };
  fails("\"valid\"", "must be \"same\" when it is a string");
  fails("[1, 2, 3]", "[top, left, bottom, right]");
  // Read as every model integer is (0 to 2^24, formats/model.h).
  fails("[0, 0, -1, 0]", "\"padding\" must be from 0 to 16777216, got -1");
  fails("[0, 0, 4611686018427387904, 0]", "\"padding\" must be from 0 to 16777216, got 4611686018427387904");
  fails("[2, 0, 0, 0]", "between 0 and half the kernel", "maxpool2d");
  const std::string ceil = R"({"format": "spade-model", "input": [3, 8, 8], "nodes": [{"name": "p", "op": "maxpool2d",
      "inputs": ["input"], "kernel": 3, "stride": 2, "padding": "same", "ceil_mode": true}]})";
  CHECK_THROWS_WITH(parse_model_json(ceil, "ceil.json"), Contains("ceil.json") && Contains("ceil_mode needs symmetric padding"));
}
