// ImageFolder over directories and tar archives. The fixture tars were written by Python's tarfile
// (tests/data/make_image_golden.py) in ustar, GNU and pax format, with the listing tarfile itself
// reports; other archives are assembled byte by byte here to reach the corner cases.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/image.h"
#include "formats/image_folder.h"
#include "support/test_support.h"

using spade::test::error_of;
using namespace spade;
namespace fs = std::filesystem;

namespace {

std::string image_path(const std::string& file) { return test::data_path("image/" + file); }

nlohmann::json tar_cases() {
  return nlohmann::json::parse(read_text_file(image_path("golden.json")))["tars"];
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) { write_file_atomic(path, b.data(), b.size()); }

// ---- a minimal tar writer, for archives tarfile would not produce -------------------------------
void set_octal(std::vector<uint8_t>& h, size_t at, size_t len, uint64_t v) {
  std::string s(len - 1, '0');
  for (size_t i = len - 1; i-- > 0; v >>= 3) s[i] = char('0' + (v & 7));
  std::memcpy(&h[at], s.data(), len - 1);
  h[at + len - 1] = 0;
}

void set_checksum(uint8_t* h) {
  std::memset(h + 148, ' ', 8);
  uint32_t sum = 0;
  for (int i = 0; i < 512; ++i) sum += h[i];
  char buf[8];
  std::snprintf(buf, sizeof buf, "%06o", sum);
  std::memcpy(h + 148, buf, 7);  // six digits, NUL, and the space left in place
}

std::vector<uint8_t> tar_header(const std::string& name, char type, uint64_t size, bool magic = true) {
  std::vector<uint8_t> h(512, 0);
  std::memcpy(&h[0], name.data(), std::min<size_t>(name.size(), 100));
  set_octal(h, 100, 8, 0644);
  set_octal(h, 108, 8, 0);
  set_octal(h, 116, 8, 0);
  set_octal(h, 124, 12, size);
  set_octal(h, 136, 12, 0);
  h[156] = uint8_t(type);
  if (magic) std::memcpy(&h[257], "ustar\0" "00", 8);
  set_checksum(h.data());
  return h;
}

void append_member(std::vector<uint8_t>& tar, const std::string& name, char type, const std::vector<uint8_t>& data,
                   bool pad = true, bool magic = true) {
  std::vector<uint8_t> h = tar_header(name, type, data.size(), magic);
  tar.insert(tar.end(), h.begin(), h.end());
  tar.insert(tar.end(), data.begin(), data.end());
  if (pad) tar.resize((tar.size() + 511) / 512 * 512, 0);
}

void append_end(std::vector<uint8_t>& tar) { tar.resize(tar.size() + 1024, 0); }

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// Offset of the header whose name field starts with `name`.
size_t header_offset(const std::vector<uint8_t>& tar, const std::string& name) {
  for (size_t pos = 0; pos + 512 <= tar.size(); pos += 512)
    if (std::memcmp(&tar[pos], name.data(), name.size()) == 0 && tar[pos + name.size()] == 0) return pos;
  FAIL("no header named " << name);
  return 0;
}

void check_listing(const ImageFolder& f, const nlohmann::json& expect, const std::string& strip_prefix = "") {
  std::vector<std::string> classes = expect["classes"];
  CHECK(f.classes() == classes);
  const auto& samples = expect["samples"];
  REQUIRE(f.size() == samples.size());
  for (size_t i = 0; i < f.size(); ++i) {
    std::string name = samples[i][0];
    name = name.substr(strip_prefix.size());
    const LabeledImage s = f.get(i);
    INFO(name);
    CHECK(s.name == name);
    CHECK(s.label == int(samples[i][1]));
    CHECK(s.bytes == read_file(image_path(samples[i][2])));
  }
}

}  // namespace

TEST_CASE("ImageFolder lists ustar, GNU and pax archives written by Python's tarfile", "[image_folder]") {
  const auto cases = tar_cases();
  REQUIRE(cases.size() == 3);
  for (const auto& c : cases) {
    const std::string tar = c["tar"];
    INFO(tar);
    ImageFolder f(image_path(tar));
    CHECK(f.path() == image_path(tar));
    REQUIRE(c["samples"].size() >= 6);
    check_listing(f, c);
    // The bytes are a real image file.
    const Image im = decode_image(f.get(0).bytes.data(), f.get(0).bytes.size(), f.get(0).name);
    CHECK(im.width > 0);
  }
}

TEST_CASE("ImageFolder reads a directory tree in the same order", "[image_folder]") {
  // The pax fixture's layout, unpacked by hand, plus things that must be ignored.
  const nlohmann::json expect = tar_cases()[2];
  const std::string root = test::temp_dir();
  for (const auto& s : expect["samples"]) write_bytes(join_path(root, s[0]), read_file(image_path(s[2])));
  write_file_atomic(join_path(root, "set/dog/notes.txt"), "not an image\n");
  write_file_atomic(join_path(root, "top.png"), "files directly in the root have no class\n");
  fs::create_directories(join_path(root, "set/empty_class"));
  fs::create_directories(join_path(root, "set/cat/subdir.png"));  // a directory with an image-like name

  SECTION("rooted above the class directories' parent") { check_listing(ImageFolder(root), expect); }
  SECTION("rooted at the class directories' parent, like torchvision") {
    check_listing(ImageFolder(join_path(root, "set")), expect, "set/");
  }
  SECTION("get() past the end") {
    ImageFolder f(root);
    CHECK(contains(error_of([&] { f.get(f.size()); }), "out of range"));
  }
}

TEST_CASE("ImageFolder handles tar corner cases", "[image_folder]") {
  const std::string dir = test::temp_dir();
  const std::vector<uint8_t> png = read_file(image_path("src_resize_5x3.png"));
  const std::vector<uint8_t> bmp = read_file(image_path("small.bmp"));

  SECTION("./ prefixes, duplicates, base-256 sizes, no end marker and no final padding") {
    std::vector<uint8_t> tar;
    append_member(tar, "./a/x.png", '0', bmp);  // replaced by the later copy below
    std::vector<uint8_t> h = tar_header("b/y.PNG", '0', 0);
    std::memset(&h[124], 0, 12);
    h[124] = 0x80;  // GNU base-256 size
    h[134] = uint8_t(png.size() >> 8);
    h[135] = uint8_t(png.size() & 0xff);
    set_checksum(h.data());
    tar.insert(tar.end(), h.begin(), h.end());
    tar.insert(tar.end(), png.begin(), png.end());
    tar.resize((tar.size() + 511) / 512 * 512, 0);
    append_member(tar, "a/", '5', {});
    append_member(tar, "a/lnk.png", '2', {});
    append_member(tar, "a/x.png", '0', png, /*pad=*/false);
    const std::string path = dir + "/corner.tar";
    write_bytes(path, tar);

    ImageFolder f(path);
    REQUIRE(f.classes() == std::vector<std::string>{"a", "b"});
    REQUIRE(f.size() == 2);
    CHECK(f.get(0).name == "a/x.png");
    CHECK(f.get(0).bytes == png);
    CHECK(f.get(1).name == "b/y.PNG");
    CHECK(f.get(1).label == 1);
    CHECK(f.get(1).bytes == png);
  }
  SECTION("pax path and size override the header; GNU long names") {
    std::vector<uint8_t> tar;
    const std::string long_name = "cls/" + std::string(150, 'n') + ".bmp";
    auto record = [](const std::string& kv) {  // "<len> key=value\n", the length counting itself
      size_t len = kv.size() + 3;
      while (std::to_string(len).size() + kv.size() + 2 != len) ++len;
      return std::to_string(len) + " " + kv + "\n";
    };
    append_member(tar, "PaxHeader", 'x', bytes_of(record("path=" + long_name) + record("size=" + std::to_string(bmp.size()))));
    std::vector<uint8_t> h = tar_header("short.bmp", '0', 1);  // the pax size wins over this one
    tar.insert(tar.end(), h.begin(), h.end());
    tar.insert(tar.end(), bmp.begin(), bmp.end());
    tar.resize((tar.size() + 511) / 512 * 512, 0);
    const std::string gnu_name = "other/" + std::string(120, 'g') + ".png";
    append_member(tar, "././@LongLink", 'L', bytes_of(gnu_name + std::string(1, '\0')));
    append_member(tar, "truncated-name", '0', png);
    append_end(tar);
    const std::string path = dir + "/meta.tar";
    write_bytes(path, tar);

    ImageFolder f(path);
    REQUIRE(f.classes() == std::vector<std::string>{"cls", "other"});
    REQUIRE(f.size() == 2);
    CHECK(f.get(0).name == long_name);
    CHECK(f.get(0).bytes == bmp);
    CHECK(f.get(1).name == gnu_name);
    CHECK(f.get(1).bytes == png);
  }
  SECTION("pre-POSIX tar without magic is recognised by its extension") {
    std::vector<uint8_t> tar;
    append_member(tar, "k/p.png", '\0', png, true, /*magic=*/false);
    append_end(tar);
    write_bytes(dir + "/old.TAR", tar);
    ImageFolder f(dir + "/old.TAR");
    REQUIRE(f.size() == 1);
    CHECK(f.get(0).bytes == png);
    write_bytes(dir + "/old.bin", tar);
    CHECK(contains(error_of([&] { ImageFolder g(dir + "/old.bin"); }), "not a directory or a tar archive"));
  }
  SECTION("malformed pax record") {
    std::vector<uint8_t> tar;
    append_member(tar, "PaxHeader/bad", 'x', bytes_of("99 path=x\n"));
    append_member(tar, "c/z.png", '0', png);
    append_end(tar);
    write_bytes(dir + "/pax.tar", tar);
    const std::string msg = error_of([&] { ImageFolder f(dir + "/pax.tar"); });
    CHECK(contains(msg, dir + "/pax.tar"));
    CHECK(contains(msg, "PaxHeader/bad"));
    CHECK(contains(msg, "pax"));
  }
  SECTION("archive without images, empty directory, missing path, non-tar file") {
    std::vector<uint8_t> tar;
    append_member(tar, "c/readme.txt", '0', bytes_of("text"));
    append_end(tar);
    write_bytes(dir + "/noimg.tar", tar);
    CHECK(contains(error_of([&] { ImageFolder f(dir + "/noimg.tar"); }), "no image files"));
    fs::create_directories(dir + "/emptydir/cls");
    CHECK(contains(error_of([&] { ImageFolder f(dir + "/emptydir"); }), "no image files"));
    CHECK(contains(error_of([&] { ImageFolder f(dir + "/missing"); }), dir + "/missing"));
    CHECK(contains(error_of([&] { ImageFolder f(image_path("src.png")); }), "not a directory or a tar archive"));
  }
}

TEST_CASE("ImageFolder reports corrupt and truncated archives", "[image_folder]") {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/bad.tar";
  std::vector<uint8_t> tar = read_file(image_path("gnu.tar"));
  const size_t b = header_offset(tar, "set/cat/B.PNG");
  const std::vector<uint8_t> member = read_file(image_path("src_crop_30x13.png"));
  auto error_for = [&](const std::vector<uint8_t>& bytes) {
    write_bytes(path, bytes);
    return error_of([&] { ImageFolder f(path); });
  };

  SECTION("header checksum") {
    tar[b + 8] ^= 0x20;  // "set/cat/b.PNG"
    const std::string msg = error_for(tar);
    CHECK(contains(msg, path));
    CHECK(contains(msg, "set/cat/b.PNG"));
    CHECK(contains(msg, "checksum"));
  }
  SECTION("truncated inside a member's data") {
    tar.resize(b + 512 + member.size() / 2);
    const std::string msg = error_for(tar);
    CHECK(contains(msg, path));
    CHECK(contains(msg, "set/cat/B.PNG"));
    CHECK(contains(msg, "truncated"));
  }
  SECTION("truncated inside a header") {
    tar.resize(b + 100);
    const std::string msg = error_for(tar);
    CHECK(contains(msg, path));
    CHECK(contains(msg, "truncated"));
  }
  SECTION("size field that is not a number") {
    std::memcpy(&tar[b + 124], "9zz", 3);
    set_checksum(&tar[b]);
    const std::string msg = error_for(tar);
    CHECK(contains(msg, "set/cat/B.PNG"));
    CHECK(contains(msg, "size"));
  }
  SECTION("size larger than the archive") {
    set_octal(tar, b + 124, 12, 077777777);
    set_checksum(&tar[b]);
    const std::string msg = error_for(tar);
    CHECK(contains(msg, "set/cat/B.PNG"));
    CHECK(contains(msg, "truncated"));
  }
  SECTION("the unmodified archive is fine") { CHECK(error_for(tar) == "<no spade::Error thrown>"); }
}

TEST_CASE("ImageFolder reads the CIFAR-10 test archive from ../shared", "[image_folder][shared]") {
  const std::string path = test::shared_path("data/cifar10/test.tar");
  if (!test::shared_available() || !fs::exists(path)) {
    WARN("../shared is absent: skipping the CIFAR-10 tar test");
    return;
  }
  ImageFolder f(path);
  CHECK(f.classes() == std::vector<std::string>{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                "horse", "ship", "truck"});
  REQUIRE(f.size() == 10000);
  const LabeledImage first = f.get(0);
  CHECK(first.label == 0);
  CHECK(first.name == "test/airplane/0000.jpg");
  const Image im = decode_image(first.bytes.data(), first.bytes.size(), first.name);
  CHECK(im.width == 32);
  CHECK(im.height == 32);
  CHECK(f.get(f.size() - 1).label == 9);
}
