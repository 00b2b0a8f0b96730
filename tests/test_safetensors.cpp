// safetensors reader/writer: round trips, dtype conversion against hand-computed bit patterns and
// against torch (tests/data/make_safetensors_golden.py), and one refusal per malformation, each
// file built byte by byte.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "formats/file_io.h"
#include "formats/safetensors.h"
#include "support/test_support.h"

using spade::test::error_of;
using namespace spade;
using Catch::Contains;

namespace {

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

template <typename T>
std::string raw_bytes(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(&s[0], values.data(), s.size());
  return s;
}

// A safetensors file from its header text and data bytes; the length field is the header's
// own length unless declared_len overrides it.
std::string st_file(const std::string& header, const std::string& data, int64_t declared_len = -1) {
  uint64_t n = declared_len >= 0 ? static_cast<uint64_t>(declared_len) : header.size();
  return le64(n) + header + data;
}

std::string write_bytes(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::string path = dir + "/" + name;
  write_file_atomic(path, bytes);
  return path;
}

uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

float bits_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         (a.numel() == 0 || std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * 4) == 0);
}

}  // namespace

TEST_CASE("safetensors dtype names and sizes", "[safetensors]") {
  CHECK(std::string(dtype_name(DType::BF16)) == "BF16");
  CHECK(std::string(dtype_name(DType::F8_E5M2)) == "F8_E5M2");
  CHECK(dtype_size(DType::F64) == 8);
  CHECK(dtype_size(DType::F16) == 2);
  CHECK(dtype_size(DType::BOOL) == 1);
  DType d;
  REQUIRE(dtype_from_name("U16", &d));
  CHECK(d == DType::U16);
  CHECK_FALSE(dtype_from_name("f32", &d));
}

TEST_CASE("safetensors round trip keeps names, shapes, values and metadata", "[safetensors]") {
  std::string dir = test::temp_dir();
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"layer1.0.conv1.weight", test::random_tensor({2, 3, 4}, 1)},
      {"scalar", Tensor::from_vector({}, {3.5f})},
      {"empty", Tensor::zeros({0, 5})},
      {"fc.bias", test::random_tensor({7}, 2, -100.f, 100.f)},
  };
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "h\xc3\xa9llo, \"quoted\""}};
  std::string path = dir + "/rt.safetensors";
  save_safetensors(path, tensors, meta);

  SafetensorsFile f(path);
  CHECK(f.metadata() == meta);
  REQUIRE(f.entries().size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsEntry& e = f.entries()[i];
    CHECK(e.name == tensors[i].first);
    CHECK(e.dtype == DType::F32);
    CHECK(e.shape == tensors[i].second.shape());
    CHECK(e.end - e.begin == static_cast<uint64_t>(tensors[i].second.numel()) * 4);
    CHECK(same_bits(f.tensor(e.name), tensors[i].second));
  }
  CHECK(f.contains("scalar"));
  CHECK_FALSE(f.contains("nope"));
  CHECK(f.tensor("scalar").ndim() == 0);
  CHECK(f.tensor("scalar")[0] == 3.5f);

  std::map<std::string, Tensor> all = load_safetensors(path);
  REQUIRE(all.size() == tensors.size());
  for (const auto& [name, t] : tensors) CHECK(same_bits(all.at(name), t));

  // No metadata and no tensors at all is still a valid file.
  std::string empty_path = dir + "/none.safetensors";
  save_safetensors(empty_path, {});
  SafetensorsFile none(empty_path);
  CHECK(none.entries().empty());
  CHECK(none.metadata().empty());
}

TEST_CASE("safetensors writer pads the header with spaces to a multiple of 8", "[safetensors]") {
  std::string dir = test::temp_dir();
  // Names of every length 1..8 make at least some of the JSON lengths need padding.
  for (int len = 1; len <= 8; ++len) {
    std::string name(len, 'w');
    std::string path = dir + "/pad" + std::to_string(len) + ".safetensors";
    Tensor t = test::random_tensor({3, 2}, len);
    save_safetensors(path, {{name, t}});
    std::vector<uint8_t> bytes = read_file(path);
    REQUIRE(bytes.size() >= 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
    INFO("name length " << len << ", header length " << n);
    CHECK(n % 8 == 0);
    REQUIRE(bytes.size() == 8 + n + 24);
    std::string header(bytes.begin() + 8, bytes.begin() + 8 + n);
    size_t close = header.find_last_of('}');
    REQUIRE(close != std::string::npos);
    CHECK(header.find_first_not_of(' ', close + 1) == std::string::npos);
    CHECK(close + 1 + 7 >= header.size());  // padding is the minimum needed
    // Independent check of the header contents with nlohmann directly.
    nlohmann::json j = nlohmann::json::parse(header);
    CHECK(j.size() == 1);
    CHECK(j[name]["dtype"] == "F32");
    CHECK(j[name]["shape"] == nlohmann::json::array({3, 2}));
    CHECK(j[name]["data_offsets"] == nlohmann::json::array({0, 24}));
    CHECK(std::memcmp(bytes.data() + 8 + n, t.data(), 24) == 0);
  }
}

TEST_CASE("safetensors converts F16, BF16, F64 and integer dtypes to float32", "[safetensors]") {
  std::string dir = test::temp_dir();
  const float inf = std::numeric_limits<float>::infinity();
  // Hand-computed IEEE half-precision patterns.
  std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x0001, 0x7C00, 0xFC00, 0x8000, 0x03FF, 0x0400, 0x7BFF, 0x3555, 0x7E00};
  std::vector<float> f16_expect = {1.f,   -2.f,  std::ldexp(1.f, -24), inf,          -inf, -0.f,
                                   std::ldexp(1023.f, -24), std::ldexp(1.f, -14), 65504.f, 0.333251953125f};
  std::vector<uint16_t> bf16 = {0x3F80, 0xC040, 0x7F80, 0x0001, 0x4049};
  std::vector<float> bf16_expect = {1.f, -3.f, inf, bits_float(0x00010000u), 3.140625f};
  std::vector<uint64_t> f64 = {0x3FF0000000000000ull, 0xBFE0000000000000ull, 0x3FB999999999999Aull, 0x7FF0000000000000ull};
  std::vector<float> f64_expect = {1.f, -0.5f, bits_float(0x3DCCCCCDu), inf};
  std::vector<int64_t> i64 = {5, -3, 16777216, int64_t(1) << 53, -(int64_t(1) << 40)};
  std::vector<float> i64_expect = {5.f, -3.f, 16777216.f, 9007199254740992.f, -1099511627776.f};
  std::vector<int8_t> i8 = {-128, -1, 0, 127};
  std::vector<uint8_t> boolean = {1, 0, 1};
  std::vector<uint16_t> u16 = {65535, 7};
  std::vector<int32_t> i32 = {-2147483647 - 1, 42};

  std::string data = raw_bytes(f16) + raw_bytes(bf16) + raw_bytes(f64) + raw_bytes(i64) + raw_bytes(i8) +
                     raw_bytes(boolean) + raw_bytes(u16) + raw_bytes(i32);
  std::string header = R"({"h":{"dtype":"F16","shape":[11],"data_offsets":[0,22]},)"
                       R"("b":{"dtype":"BF16","shape":[5],"data_offsets":[22,32]},)"
                       R"("d":{"dtype":"F64","shape":[2,2],"data_offsets":[32,64]},)"
                       R"("l":{"dtype":"I64","shape":[5],"data_offsets":[64,104]},)"
                       R"("c":{"dtype":"I8","shape":[4],"data_offsets":[104,108]},)"
                       R"("t":{"dtype":"BOOL","shape":[3],"data_offsets":[108,111]},)"
                       R"("w":{"dtype":"U16","shape":[2],"data_offsets":[111,115]},)"
                       R"("i":{"dtype":"I32","shape":[1,2],"data_offsets":[115,123]}})";
  std::string path = write_bytes(dir, "conv.safetensors", st_file(header, data));
  SafetensorsFile f(path);

  Tensor h = f.tensor("h");
  REQUIRE(h.shape() == Shape{11});
  for (size_t i = 0; i < f16_expect.size(); ++i) {
    INFO("F16 0x" << std::hex << f16[i]);
    CHECK(float_bits(h[i]) == float_bits(f16_expect[i]));
  }
  CHECK(std::isnan(h[10]));
  Tensor b = f.tensor("b");
  for (size_t i = 0; i < bf16_expect.size(); ++i) CHECK(float_bits(b[i]) == float_bits(bf16_expect[i]));
  Tensor d = f.tensor("d");
  CHECK(d.shape() == Shape{2, 2});
  for (size_t i = 0; i < f64_expect.size(); ++i) CHECK(float_bits(d[i]) == float_bits(f64_expect[i]));
  Tensor l = f.tensor("l");
  for (size_t i = 0; i < i64_expect.size(); ++i) CHECK(l[i] == i64_expect[i]);
  CHECK(f.tensor("c").to_vector() == std::vector<float>{-128.f, -1.f, 0.f, 127.f});
  CHECK(f.tensor("t").to_vector() == std::vector<float>{1.f, 0.f, 1.f});
  CHECK(f.tensor("w").to_vector() == std::vector<float>{65535.f, 7.f});
  CHECK(f.tensor("i").to_vector() == std::vector<float>{-2147483648.f, 42.f});
  // The data section starts at an odd offset here, so these reads were unaligned.
  CHECK(f.entry("i").begin == 115);
}

TEST_CASE("safetensors conversion matches torch (mixed.safetensors)", "[safetensors]") {
  std::string path = test::data_path("safetensors/mixed.safetensors");
  SafetensorsFile f(path);
  CHECK(f.metadata().at("format") == "pt");
  int checked = 0;
  for (const SafetensorsEntry& e : f.entries()) {
    if (e.name.rfind("expected.", 0) == 0) continue;
    INFO("tensor " << e.name << " dtype " << dtype_name(e.dtype));
    REQUIRE(f.contains("expected." + e.name));
    CHECK(f.entry("expected." + e.name).dtype == DType::F32);
    Tensor got = f.tensor(e.name);
    Tensor want = f.tensor("expected." + e.name);
    CHECK(got.shape() == e.shape);
    CHECK(same_bits(got, want));
    ++checked;
  }
  CHECK(checked >= 10);
  CHECK(f.entry("f16").dtype == DType::F16);
  CHECK(f.entry("bf16").dtype == DType::BF16);
  CHECK(f.entry("f64").dtype == DType::F64);
  CHECK(f.entry("i64").dtype == DType::I64);
  CHECK(f.entry("bn.num_batches_tracked").shape.empty());
  // Integer entries other than num_batches_tracked make the float-only loader refuse.
  CHECK_THAT(error_of([&] { load_safetensors(path); }), Contains(path) && Contains("'i64'") && Contains("I64"));
}

TEST_CASE("load_safetensors skips num_batches_tracked and refuses other integer entries", "[safetensors]") {
  std::string dir = test::temp_dir();
  std::string data = raw_bytes(std::vector<float>{1.f, 2.f}) + raw_bytes(std::vector<int64_t>{7});
  std::string path = write_bytes(
      dir, "bn.safetensors",
      st_file(R"({"bn.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
              R"("bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})",
              data));
  std::map<std::string, Tensor> m = load_safetensors(path);
  REQUIRE(m.size() == 1);
  CHECK(m.at("bn.weight").to_vector() == std::vector<float>{1.f, 2.f});
  // Still reachable through SafetensorsFile for those who want it.
  CHECK(SafetensorsFile(path).tensor("bn.num_batches_tracked")[0] == 7.f);

  std::string bad = write_bytes(
      dir, "steps.safetensors",
      st_file(R"({"bn.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
              R"("bn.num_batches_trackedX":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})",
              data));
  CHECK_THAT(error_of([&] { load_safetensors(bad); }), Contains(bad) && Contains("'bn.num_batches_trackedX'"));
}

TEST_CASE("safetensors refuses malformed files with a message naming the file", "[safetensors]") {
  std::string dir = test::temp_dir();
  const std::string f32x2 = raw_bytes(std::vector<float>{1.f, 2.f});
  auto open_error = [](const std::string& path) { return error_of([&] { SafetensorsFile f(path); }); };
  auto check = [&](const std::string& name, const std::string& bytes, const std::string& problem) {
    std::string path = write_bytes(dir, name, bytes);
    std::string msg = open_error(path);
    INFO("message: " << msg);
    CHECK_THAT(msg, Contains(path) && Contains(problem));
    CHECK(msg.find('\n') == std::string::npos);
    CHECK(msg.find('\xff') == std::string::npos);
    // The float loader goes through the same validation.
    CHECK_THAT(error_of([&] { load_safetensors(path); }), Contains(path) && Contains(problem));
  };

  SECTION("missing file") {
    std::string path = dir + "/absent.safetensors";
    CHECK_THAT(open_error(path), Contains(path));
  }
  SECTION("empty file") { check("empty.safetensors", "", "too short"); }
  SECTION("truncated file") { check("trunc.safetensors", std::string("\x10\x00\x00\x00\x00", 5), "too short"); }
  SECTION("header length larger than the file") {
    check("long.safetensors", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32x2, 200),
          "runs past the end");
  }
  SECTION("header length claims more than 100 MB") {
    check("huge_header.safetensors", st_file("{}", "", 100000001), "100000000-byte limit");
  }
  SECTION("header length of 2^64 - 1 does not wrap around") {
    check("wrap.safetensors", le64(std::numeric_limits<uint64_t>::max()) + "{}", "limit");
  }
  SECTION("zero-length header") { check("zero.safetensors", st_file("", ""), "must start with '{'"); }
  SECTION("non-JSON header") { check("nonjson.safetensors", st_file("{not json}", ""), "not valid UTF-8 JSON"); }
  SECTION("truncated JSON header") {
    check("halfjson.safetensors", st_file(R"({"a":{"dtype":"F32")", ""), "not valid UTF-8 JSON");
  }
  SECTION("invalid UTF-8 in a tensor name") {
    check("utf8.safetensors", st_file("{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
                                      raw_bytes(std::vector<float>{1.f})),
          "not valid UTF-8 JSON");
  }
  SECTION("control characters from the file are escaped in the one-line message") {
    check("newline.safetensors", st_file(R"({"a\nb":[1]})", ""), "'a\\x0ab'");
  }
  SECTION("JSON that is not an object") { check("array.safetensors", st_file("[1, 2]  ", ""), "not a JSON object"); }
  SECTION("JSON value after the object") { check("two.safetensors", st_file("{} {}", ""), "not valid UTF-8 JSON"); }
  SECTION("entry that is not an object") { check("entry.safetensors", st_file(R"({"a":[1,2]})", ""), "'a'"); }
  SECTION("unknown dtype") {
    check("dtype.safetensors", st_file(R"({"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", f32x2),
          "unknown dtype 'F17'");
  }
  SECTION("dtype that is not a string") {
    check("dtype2.safetensors", st_file(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", f32x2),
          "\"dtype\" is not a string");
  }
  SECTION("missing dtype") {
    check("nodtype.safetensors", st_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", f32x2), "missing \"dtype\"");
  }
  SECTION("missing shape") {
    check("noshape.safetensors", st_file(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", f32x2), "missing \"shape\"");
  }
  SECTION("wrong dtype size: offsets disagree with the shape") {
    check("size.safetensors", st_file(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", f32x2),
          "needs 16");
  }
  SECTION("begin after end") {
    check("backwards.safetensors", st_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", f32x2),
          "begin > end");
  }
  SECTION("overlapping offsets") {
    std::string data = raw_bytes(std::vector<float>{1.f, 2.f, 3.f});
    check("overlap.safetensors",
          st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                  data),
          "overlaps");
  }
  SECTION("two tensors sharing the same bytes") {
    check("alias.safetensors",
          st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                  f32x2),
          "overlaps");
  }
  SECTION("a hole between tensors") {
    std::string data = raw_bytes(std::vector<float>{1.f, 2.f, 0.f, 3.f, 4.f});
    check("hole.safetensors",
          st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                  data),
          "hole");
  }
  SECTION("a hole at the start of the data") {
    check("lead.safetensors", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32x2), "hole");
  }
  SECTION("trailing bytes after the last tensor") {
    check("trailing.safetensors",
          st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32x2 + "xyz"), "3 trailing bytes");
  }
  SECTION("tensor data past the end of the file") {
    check("short.safetensors", st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f32x2),
          "truncated");
  }
  SECTION("negative shape") {
    check("neg.safetensors", st_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32x2),
          "not a non-negative integer");
  }
  SECTION("non-integer shape") {
    check("frac.safetensors", st_file(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", f32x2),
          "not a non-negative integer");
    check("str.safetensors", st_file(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", f32x2),
          "not a non-negative integer");
  }
  SECTION("shape that is not an array") {
    check("shape_obj.safetensors", st_file(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", f32x2),
          "\"shape\" is not an array");
  }
  SECTION("huge shape whose byte size overflows") {
    check("overflow.safetensors",
          st_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", f32x2),
          "overflows");
    // 2^62 elements * 4 bytes = 2^64 wraps to 0: must not be mistaken for an empty tensor.
    check("wrap0.safetensors",
          st_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", ""), "overflows");
    check("bigdim.safetensors",
          st_file(R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]}})", f32x2), "too large");
  }
  SECTION("huge shape that fits in 64 bits is refused by its size, without allocating") {
    check("big.safetensors", st_file(R"({"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,8]}})", f32x2),
          "needs 4398046511104");
  }
  SECTION("missing data_offsets") {
    check("nooff.safetensors", st_file(R"({"a":{"dtype":"F32","shape":[2]}})", f32x2), "missing \"data_offsets\"");
  }
  SECTION("data_offsets that are not two non-negative integers") {
    check("off3.safetensors", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", f32x2),
          "data_offsets");
    check("offneg.safetensors", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", f32x2),
          "data_offsets");
  }
  SECTION("metadata with a non-string value") {
    check("meta.safetensors", st_file(R"({"__metadata__":{"format":"pt","epochs":10}})", ""), "'epochs'");
  }
  SECTION("metadata that is not an object") {
    check("meta2.safetensors", st_file(R"({"__metadata__":"pt"})", ""), "\"__metadata__\" is not a JSON object");
  }
  SECTION("duplicate tensor names") {
    check("dup.safetensors",
          st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                  f32x2),
          "duplicate key 'a'");
  }
  SECTION("deeply nested JSON") {
    check("deep.safetensors", st_file("{\"__metadata__\":" + std::string(5000, '[') + std::string(5000, ']') + "}", ""),
          "nested");
  }
}

TEST_CASE("safetensors refuses absent names and F8 conversion", "[safetensors]") {
  std::string dir = test::temp_dir();
  std::string path = write_bytes(dir, "f8.safetensors",
                                 st_file(R"({"q":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[0,4]}})", "abcd"));
  SafetensorsFile f(path);
  CHECK(f.entry("q").dtype == DType::F8_E4M3);
  CHECK_THAT(error_of([&] { f.tensor("q"); }), Contains(path) && Contains("F8_E4M3"));
  CHECK_THAT(error_of([&] { f.entry("zz"); }), Contains(path) && Contains("'zz'"));
  CHECK_THAT(error_of([&] { f.tensor("zz"); }), Contains(path) && Contains("'zz'"));
}

TEST_CASE("save_safetensors refuses duplicate and reserved names", "[safetensors]") {
  std::string dir = test::temp_dir();
  std::string path = dir + "/bad.safetensors";
  Tensor t = Tensor::zeros({2});
  CHECK_THAT(error_of([&] { save_safetensors(path, {{"a", t}, {"a", t}}); }), Contains(path) && Contains("duplicate"));
  CHECK_THAT(error_of([&] { save_safetensors(path, {{"__metadata__", t}}); }), Contains(path));
  CHECK_THAT(error_of([&] { save_safetensors(path, {{"u", Tensor()}}); }), Contains(path) && Contains("undefined"));
  CHECK_FALSE(std::ifstream(path).good());
}
