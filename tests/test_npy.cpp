// NPY reader/writer: round trips, files written by NumPy (tests/data/npy, made with
//   /usr/bin/python3 -c "import numpy as np; a = np.arange(120).reshape(2,3,4,5)/7;
//     np.save('arange_f4.npy', a.astype(np.float32)); np.save('arange_f8.npy', a);
//     np.save('scalar_f4.npy', np.array(2.5, dtype=np.float32));
//     np.lib.format.write_array(open('arange_f4_v2.npy', 'wb'), a.astype(np.float32), version=(2, 0));
//     np.save('fortran_f4.npy', np.asfortranarray(a[0, 0].astype(np.float32)));
//     np.save('int64.npy', np.arange(6, dtype=np.int64)); np.save('range5_f4.npy', np.arange(5, dtype=np.float32))"
// ), and one refusal per malformation, each file built byte by byte.
#include <catch2/catch.hpp>

#include <cstring>
#include <functional>

#include "formats/file_io.h"
#include "formats/npy.h"
#include "support/test_support.h"

using spade::test::error_of;
using namespace spade;
using Catch::Contains;

namespace {

// An .npy file from a header dict text; the length field is the header's own unless overridden.
std::string npy_file(const std::string& dict, const std::string& data, int major = 1, int minor = 0,
                     int64_t declared_len = -1) {
  std::string header = dict + "\n";
  uint32_t n = declared_len >= 0 ? static_cast<uint32_t>(declared_len) : static_cast<uint32_t>(header.size());
  std::string s = std::string("\x93NUMPY", 6) + static_cast<char>(major) + static_cast<char>(minor);
  int len_bytes = major == 1 ? 2 : 4;
  for (int i = 0; i < len_bytes; ++i) s += static_cast<char>((n >> (8 * i)) & 0xFF);
  return s + header + data;
}

template <typename T>
std::string raw_bytes(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(&s[0], values.data(), s.size());
  return s;
}

std::string write_bytes(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::string path = dir + "/" + name;
  write_file_atomic(path, bytes);
  return path;
}

// NumPy's own values for np.arange(120) / 7 converted to float32.
void check_arange_over_7(const Tensor& t) {
  REQUIRE(t.shape() == Shape{2, 3, 4, 5});
  for (int64_t i = 0; i < 120; ++i) {
    INFO("element " << i);
    CHECK(t[i] == static_cast<float>(static_cast<double>(i) / 7.0));
  }
}

}  // namespace

TEST_CASE("npy round trip of any rank", "[npy]") {
  std::string dir = test::temp_dir();
  std::vector<Tensor> cases = {test::random_tensor({2, 3, 4, 5}, 3), test::random_tensor({7}, 4),
                               Tensor::from_vector({}, {-1.25f}), Tensor::zeros({0, 3}),
                               test::random_tensor({1, 1, 1, 1, 1, 1, 2}, 5)};
  for (size_t i = 0; i < cases.size(); ++i) {
    const Tensor& t = cases[i];
    INFO("shape " << shape_str(t.shape()));
    std::string path = dir + "/t" + std::to_string(i) + ".npy";
    save_npy(path, t);
    std::vector<uint8_t> bytes = read_file(path);
    REQUIRE(bytes.size() >= 10);
    size_t header_len = bytes[8] | (bytes[9] << 8);
    CHECK((10 + header_len) % 64 == 0);
    CHECK(bytes[10 + header_len - 1] == '\n');
    CHECK(bytes.size() == 10 + header_len + static_cast<size_t>(t.numel()) * 4);
    Tensor back = load_npy(path);
    CHECK(back.shape() == t.shape());
    CHECK(back.to_vector() == t.to_vector());
  }
}

TEST_CASE("npy reads files written by NumPy", "[npy]") {
  check_arange_over_7(load_npy(test::data_path("npy/arange_f4.npy")));
  check_arange_over_7(load_npy(test::data_path("npy/arange_f4_v2.npy")));
  check_arange_over_7(load_npy(test::data_path("npy/arange_f8.npy")));
  Tensor s = load_npy(test::data_path("npy/scalar_f4.npy"));
  CHECK(s.ndim() == 0);
  REQUIRE(s.numel() == 1);
  CHECK(s[0] == 2.5f);
}

TEST_CASE("npy writer produces the same bytes as NumPy", "[npy]") {
  std::string dir = test::temp_dir();
  std::vector<float> values(120);
  for (int i = 0; i < 120; ++i) values[i] = static_cast<float>(static_cast<double>(i) / 7.0);
  save_npy(dir + "/a.npy", Tensor::from_vector({2, 3, 4, 5}, values));
  CHECK(read_file(dir + "/a.npy") == read_file(test::data_path("npy/arange_f4.npy")));
  save_npy(dir + "/s.npy", Tensor::from_vector({}, {2.5f}));
  CHECK(read_file(dir + "/s.npy") == read_file(test::data_path("npy/scalar_f4.npy")));
  save_npy(dir + "/r.npy", Tensor::from_vector({5}, {0.f, 1.f, 2.f, 3.f, 4.f}));
  CHECK(read_file(dir + "/r.npy") == read_file(test::data_path("npy/range5_f4.npy")));
}

TEST_CASE("npy refuses NumPy files it does not support", "[npy]") {
  std::string fortran = test::data_path("npy/fortran_f4.npy");
  CHECK_THAT(error_of([&] { load_npy(fortran); }), Contains(fortran) && Contains("fortran_order"));
  std::string i8 = test::data_path("npy/int64.npy");
  CHECK_THAT(error_of([&] { load_npy(i8); }), Contains(i8) && Contains("'<i8'"));
}

TEST_CASE("npy refuses malformed files with a message naming the file", "[npy]") {
  std::string dir = test::temp_dir();
  const std::string two = raw_bytes(std::vector<float>{1.f, 2.f});
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  auto check = [&](const std::string& name, const std::string& bytes, const std::string& problem) {
    std::string path = write_bytes(dir, name, bytes);
    std::string msg = error_of([&] { load_npy(path); });
    INFO("message: " << msg);
    CHECK_THAT(msg, Contains(path) && Contains(problem));
    CHECK(msg.find('\n') == std::string::npos);
  };

  SECTION("the well-formed baseline loads, in every version") {
    CHECK(load_npy(write_bytes(dir, "ok.npy", npy_file(ok_dict, two))).to_vector() == std::vector<float>{1.f, 2.f});
    CHECK(load_npy(write_bytes(dir, "ok2.npy", npy_file(ok_dict, two, 2))).numel() == 2);
    CHECK(load_npy(write_bytes(dir, "ok3.npy", npy_file(ok_dict, two, 3))).numel() == 2);
    std::string dq = "{\"descr\": \"|f4\", \"fortran_order\": False, \"shape\": (1, 2)}";
    CHECK(load_npy(write_bytes(dir, "dq.npy", npy_file(dq, two))).shape() == Shape{1, 2});
  }
  SECTION("missing file") {
    std::string path = dir + "/absent.npy";
    CHECK_THAT(error_of([&] { load_npy(path); }), Contains(path));
  }
  SECTION("bad magic") {
    std::string bytes = npy_file(ok_dict, two);
    bytes[1] = 'X';
    check("magic.npy", bytes, "bad magic");
    check("empty.npy", "", "bad magic");
    check("tiny.npy", "\x93NUM", "bad magic");
  }
  SECTION("unsupported version") {
    check("v4.npy", npy_file(ok_dict, two, 4), "unsupported format version 4.0");
    check("v11.npy", npy_file(ok_dict, two, 1, 1), "unsupported format version 1.1");
  }
  SECTION("truncated inside the header length") { check("len.npy", std::string("\x93NUMPY\x02\x00\x10", 9), "truncated"); }
  SECTION("header length past the end of the file") {
    check("hlen.npy", npy_file(ok_dict, "", 1, 0, 60000), "runs past the end");
    check("hlen2.npy", npy_file(ok_dict, "", 2, 0, 0x7FFFFFFF), "runs past the end");
  }
  SECTION("malformed header dict") {
    check("notdict.npy", npy_file("['descr', '<f4']", two), "malformed header");
    check("nokey.npy", npy_file("{'descr': '<f4', 'shape': (2,), }", two), "malformed header");
    check("extra.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", two),
          "unexpected key 'x'");
    check("dupkey.npy", npy_file("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", two),
          "duplicate key");
    check("unterminated.npy", npy_file("{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", two),
          "malformed header");
    check("open.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2,", two), "malformed header");
    check("garbage.npy", npy_file(ok_dict + " junk", two), "malformed header");
    check("fortran_str.npy", npy_file("{'descr': '<f4', 'fortran_order': 'no', 'shape': (2,)}", two),
          "'fortran_order'");
    check("truex.npy", npy_file("{'descr': '<f4', 'fortran_order': Truex, 'shape': (2,)}", two), "malformed header");
    check("shape_list.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", two), "'shape'");
    // "(2)" is the integer 2 in Python, not a tuple.
    check("shape_int.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", two), "'shape'");
    check("shape_neg.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", two), "'shape'");
    check("shape_float.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}", two),
          "malformed header");
    check("shape_big.npy",
          npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", two),
          "integer too large");
    check("deep.npy", npy_file("{'descr': " + std::string(3000, '(') + std::string(3000, ')') + "}", two), "nested");
  }
  SECTION("unsupported dtype is named") {
    check("i8.npy", npy_file("{'descr': '<i8', 'fortran_order': False, 'shape': (1,)}", two), "'<i8'");
    check("be.npy", npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}", two), "'>f4'");
    check("f2.npy", npy_file("{'descr': '<f2', 'fortran_order': False, 'shape': (4,)}", two), "'<f2'");
    check("nl.npy", npy_file("{'descr': '<f\n4', 'fortran_order': False, 'shape': (2,)}", two), "'<f\\x0a4'");
    check("struct.npy", npy_file("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (2,)}", two),
          "structured");
  }
  SECTION("fortran order") {
    check("fortran.npy", npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2,)}", two), "fortran_order");
  }
  SECTION("data shorter than the shape needs") {
    check("short.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", two), "needs 12");
    check("short8.npy", npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (2,)}", two), "needs 16");
  }
  SECTION("data longer than the shape needs") {
    check("long.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", two), "4 trailing bytes");
    check("long0.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': ()}", two), "4 trailing bytes");
  }
  SECTION("huge shape that would overflow") {
    check("overflow.npy",
          npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16)}", two),
          "overflows");
    // 2^62 elements * 4 bytes wraps to exactly 0: must not pass as an empty array.
    check("wrap.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,)}", ""),
          "overflows");
    check("big.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,)}", two),
          "needs 4398046511104");
  }
}

TEST_CASE("save_npy refuses an undefined tensor", "[npy]") {
  std::string path = test::temp_dir() + "/u.npy";
  CHECK_THAT(error_of([&] { save_npy(path, Tensor()); }), Contains(path));
}
