// Image decoding, PIL/torchvision-exact preprocessing and PNG output, checked against reference
// files written by tests/data/make_image_golden.py with Pillow and torchvision.
#include <catch2/catch.hpp>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "formats/file_io.h"
#include "formats/image.h"
#include "support/test_support.h"

using spade::test::error_of;
using namespace spade;

namespace {

std::string image_path(const std::string& file) { return test::data_path("image/" + file); }

nlohmann::json golden() { return nlohmann::json::parse(read_text_file(image_path("golden.json"))); }

using test::differing_bytes;

std::vector<float> read_f32(const std::string& path) {
  std::vector<uint8_t> bytes = read_file(path);
  REQUIRE(bytes.size() % 4 == 0);
  std::vector<float> v(bytes.size() / 4);
  for (size_t i = 0; i < v.size(); ++i) {  // the file is little-endian whatever the host is
    uint32_t u = uint32_t(bytes[4 * i]) | uint32_t(bytes[4 * i + 1]) << 8 | uint32_t(bytes[4 * i + 2]) << 16 |
                 uint32_t(bytes[4 * i + 3]) << 24;
    std::memcpy(&v[i], &u, 4);
  }
  return v;
}

void put_le(std::vector<uint8_t>& b, size_t at, uint32_t v, int n) {
  for (int i = 0; i < n; ++i) b[at + i] = uint8_t(v >> (8 * i));
}

void put_be32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> (24 - 8 * i));
}

// A BITMAPINFOHEADER BMP header with no pixel data.
std::vector<uint8_t> bmp_header(int32_t w, int32_t h) {
  std::vector<uint8_t> b(54, 0);
  b[0] = 'B';
  b[1] = 'M';
  put_le(b, 2, 54, 4);   // file size
  put_le(b, 10, 54, 4);  // offset of the pixels
  put_le(b, 14, 40, 4);  // header size
  put_le(b, 18, uint32_t(w), 4);
  put_le(b, 22, uint32_t(h), 4);
  put_le(b, 26, 1, 2);   // planes
  put_le(b, 28, 24, 2);  // bits per pixel
  return b;
}

// PNG signature and an IHDR chunk for an 8-bit RGB image (CRC left zero; stb does not check it).
std::vector<uint8_t> png_header(uint32_t w, uint32_t h) {
  std::vector<uint8_t> b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  b.resize(8 + 4 + 4 + 13 + 4, 0);
  put_be32(b, 8, 13);
  std::memcpy(&b[12], "IHDR", 4);
  put_be32(b, 16, w);
  put_be32(b, 20, h);
  b[24] = 8;  // bit depth
  b[25] = 2;  // colour type RGB
  return b;
}

void put_chunk(std::vector<uint8_t>& png, const char* type, const std::vector<uint8_t>& body) {
  const size_t at = png.size();
  png.resize(at + 12 + body.size());
  put_be32(png, at, uint32_t(body.size()));
  std::memcpy(&png[at + 4], type, 4);
  std::copy(body.begin(), body.end(), png.begin() + at + 8);
  put_be32(png, at + 8 + body.size(), uint32_t(crc32(0, &png[at + 4], uInt(4 + body.size()))));
}

// A complete 8-bit RGB PNG of `im`, Adam7-interlaced or not, every row with filter 0; or, with
// `keep_rows` < the image's rows, one whose compressed data ends cleanly after that many rows.
std::vector<uint8_t> make_png(const Image& im, bool interlaced, size_t keep_rows = SIZE_MAX) {
  static const int kPass[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                  {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};
  const int all[1][4] = {{0, 0, 1, 1}};
  std::vector<uint8_t> raw;
  size_t rows = 0;
  for (int p = 0; p < (interlaced ? 7 : 1); ++p) {
    const int* pass = interlaced ? kPass[p] : all[0];
    for (int y = pass[1]; y < im.height && rows < keep_rows; y += pass[3], ++rows) {
      if (pass[0] >= im.width) break;
      raw.push_back(0);
      for (int x = pass[0]; x < im.width; x += pass[2])
        for (int c = 0; c < 3; ++c) raw.push_back(im.rgb[(size_t(y) * im.width + x) * 3 + c]);
    }
  }
  uLongf packed_size = compressBound(uLong(raw.size()));
  std::vector<uint8_t> packed(packed_size);
  REQUIRE(compress(packed.data(), &packed_size, raw.data(), uLong(raw.size())) == Z_OK);
  packed.resize(packed_size);
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr(13, 0);
  put_be32(ihdr, 0, uint32_t(im.width));
  put_be32(ihdr, 4, uint32_t(im.height));
  ihdr[8] = 8;
  ihdr[9] = 2;
  ihdr[12] = interlaced ? 1 : 0;
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", packed);
  put_chunk(png, "IEND", {});
  return png;
}

Image gradient(int w, int h) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(size_t(w) * h * 3);
  for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = uint8_t(i * 7 % 256);
  return im;
}

}  // namespace

TEST_CASE("resize_image matches PIL Image.resize(BILINEAR) byte for byte", "[image]") {
  const auto cases = golden()["resize"];
  REQUIRE(cases.size() >= 8);
  for (const auto& c : cases) {
    const std::string file = c["file"];
    INFO(file);
    const Image src = load_image(image_path(c["src"]));
    const Image expect = load_image(image_path(file));
    const Image got = resize_image(src, c["w"], c["h"]);
    REQUIRE(got.width == int(c["w"]));
    REQUIRE(got.height == int(c["h"]));
    CHECK(differing_bytes(got, expect) == 0);
  }
}

TEST_CASE("resize_shorter_side matches torchvision Resize(int)", "[image]") {
  const auto cases = golden()["resize_shorter"];
  REQUIRE(cases.size() >= 5);
  for (const auto& c : cases) {
    const std::string file = c["file"];
    INFO(file);
    const Image got = resize_shorter_side(load_image(image_path(c["src"])), c["size"]);
    CHECK(differing_bytes(got, load_image(image_path(file))) == 0);
  }
}

TEST_CASE("center_crop matches torchvision CenterCrop, padding included", "[image]") {
  const auto cases = golden()["crop"];
  REQUIRE(cases.size() >= 8);
  for (const auto& c : cases) {
    const std::string file = c["file"];
    INFO(file);
    const Image got = center_crop(load_image(image_path(c["src"])), c["w"], c["h"]);
    CHECK(differing_bytes(got, load_image(image_path(file))) == 0);
  }
}

TEST_CASE("preprocess_image matches Resize+CenterCrop+ToTensor+Normalize", "[image]") {
  const auto cases = golden()["pipeline"];
  REQUIRE(cases.size() >= 3);
  for (const auto& c : cases) {
    const std::string file = c["file"];
    INFO(file);
    Preprocess p;
    p.resize = c["resize"];
    p.crop = c["crop"];
    for (int i = 0; i < 3; ++i) {
      p.mean[i] = c["mean"][i];
      p.std[i] = c["std"][i];
    }
    const Tensor got = preprocess_image(load_image(image_path(c["src"])), p);
    const Shape shape = c["shape"].get<Shape>();
    REQUIRE(got.shape() == shape);
    const Tensor expect = Tensor::from_vector(shape, read_f32(image_path(file)));
    CHECK(test::max_abs_error(got, expect) <= 1e-6);
  }
}

TEST_CASE("decode_image converts grey, alpha, palette and BMP images like PIL's convert('RGB')", "[image]") {
  const auto cases = golden()["decode"];
  REQUIRE(cases.size() >= 4);
  for (const auto& c : cases) {
    const std::string file = c["file"];
    INFO(file);
    CHECK(differing_bytes(load_image(image_path(file)), load_image(image_path(c["expect"]))) == 0);
  }
}

TEST_CASE("decode_image rejects bad input with an error naming the file", "[image]") {
  const std::vector<uint8_t> png = read_file(image_path("src.png"));

  SECTION("truncated PNG") {
    std::string msg = error_of([&] { decode_image(png.data(), png.size() / 2, "cut.png"); });
    CHECK(msg.find("cut.png") != std::string::npos);
    CHECK(msg.find("corrupt PNG") != std::string::npos);  // refused before stb sees it
  }
  SECTION("a BMP far smaller than its pixels") {
    // Found by fuzzing: 60 bytes declaring 12553x15111 uncompressed pixels.
    const std::vector<uint8_t> bmp = read_file(std::string(SPADE_FUZZ_DIR) + "/crashes/image/bmp-190mpixel-60-bytes-slow.bmp");
    std::string msg = error_of([&] { decode_image(bmp.data(), bmp.size(), "tiny.bmp"); });
    CHECK(msg.find("tiny.bmp: truncated BMP") != std::string::npos);
    // A whole BMP still decodes (the fixture's 24-bit pixels are all there).
    const std::vector<uint8_t> ok = read_file(image_path("small.bmp"));
    CHECK(decode_image(ok.data(), ok.size(), "small.bmp").width > 0);
  }
  SECTION("a PNG whose pixel data never ends") {
    // Found by fuzzing: a 1x1 PNG with a truncated zlib stream, which stb's inflater reads on as
    // zeros until it has allocated 2 GB.
    const std::vector<uint8_t> bomb =
        read_file(std::string(SPADE_FUZZ_DIR) + "/crashes/image/png-zlib-overread-2gb-alloc.png");
    std::string msg = error_of([&] { decode_image(bomb.data(), bomb.size(), "bomb.png"); });
    CHECK(msg.find("bomb.png: corrupt PNG") != std::string::npos);
  }
  SECTION("a JPEG Huffman table with more codes than stb's arrays hold") {
    // Found by fuzzing with stb instrumented: a DHT segment whose counts add up to 331 codes makes
    // stb 2.27 write past its 257-entry tables.
    const std::string fuzz = SPADE_FUZZ_DIR;
    const std::vector<uint8_t> crash = read_file(fuzz + "/crashes/image/jpeg-dht-331-codes-overflow.jpg");
    std::string msg = error_of([&] { decode_image(crash.data(), crash.size(), "dht.jpg"); });
    INFO(msg);
    CHECK(msg.find("dht.jpg: corrupt JPEG (Huffman table 0 of the segment at byte 211 declares 331 codes") == 0);
    // Valid baseline and progressive JPEGs decode; the progressive one's tables come between its
    // scans, so the check walks past entropy-coded data (a bad table after the last scan is found).
    for (const char* ok : {"small.jpg", "progressive.jpg"}) {
      INFO(ok);
      const std::vector<uint8_t> jpg = read_file(fuzz + "/corpus/image/" + ok);
      CHECK(decode_image(jpg.data(), jpg.size(), ok).width > 0);
    }
    std::vector<uint8_t> late = read_file(fuzz + "/corpus/image/progressive.jpg");
    REQUIRE(late.size() > 4);
    REQUIRE(late[late.size() - 2] == 0xFF);
    REQUIRE(late[late.size() - 1] == 0xD9);
    // FF C4, length 19: class 0 index 0, sixteen counts of 255 (4080 codes).
    std::vector<uint8_t> dht = {0xFF, 0xC4, 0x00, 0x13, 0x00};
    dht.insert(dht.end(), 16, 0xFF);
    late.insert(late.end() - 2, dht.begin(), dht.end());
    msg = error_of([&] { decode_image(late.data(), late.size(), "late.jpg"); });
    CHECK(msg.find("late.jpg: corrupt JPEG (Huffman table 0 of the segment at byte " +
                   std::to_string(late.size() - 2 - dht.size()) + " declares 4080 codes") == 0);
    // Junk bytes between the first segment and the bad table: stb skips them looking for the next
    // marker, and so does the check.
    std::vector<uint8_t> junk = read_file(fuzz + "/corpus/image/small.jpg");
    const size_t first_end = 4 + (size_t(junk[4]) << 8 | junk[5]);  // SOI, then the first segment
    std::vector<uint8_t> inserted = {0x12, 0x34, 0x56};
    inserted.insert(inserted.end(), dht.begin(), dht.end());
    junk.insert(junk.begin() + first_end, inserted.begin(), inserted.end());
    msg = error_of([&] { decode_image(junk.data(), junk.size(), "junk.jpg"); });
    INFO(msg);
    CHECK(msg.find("declares 4080 codes") != std::string::npos);
  }
  SECTION("a PNG whose pixel data ends cleanly but short of its header's image") {
    // stb would allocate the whole image first; 3000x3000 declared, one row given.
    const std::vector<uint8_t> short_png = make_png(gradient(3000, 3000), false, 1);
    std::string msg = error_of([&] { decode_image(short_png.data(), short_png.size(), "short.png"); });
    CHECK(msg == "short.png: corrupt PNG (the pixel data inflates to 9001 bytes, the header's image needs 27003000)");
    // Complete images decode exactly, interlaced (Adam7, whose passes the check sizes) or not,
    // including sizes where some passes are empty.
    for (const auto [w, h] : {std::pair{3, 3}, {1, 1}, {9, 5}, {17, 2}, {2, 17}}) {
      const Image im = gradient(w, h);
      for (bool interlaced : {false, true}) {
        INFO(w << "x" << h << (interlaced ? " interlaced" : ""));
        const std::vector<uint8_t> png = make_png(im, interlaced);
        const Image got = decode_image(png.data(), png.size(), "ok.png");
        CHECK(test::differing_bytes(got, im) == 0);
        const std::vector<uint8_t> cut = make_png(im, interlaced, interlaced ? 3 : size_t(h - 1));
        if (interlaced && w * h < 4) continue;  // three pass rows are the whole image
        CHECK(error_of([&] { decode_image(cut.data(), cut.size(), "cut.png"); }).find("the header's image needs") !=
              std::string::npos);
      }
    }
  }
  SECTION("JPEG scans need defined Huffman tables, and DC symbols are bit lengths up to 15") {
    // Found by fuzzing with stb instrumented: a scan decoding with an AC table that no DHT segment
    // defined reads stb's never-initialised table and indexes past its symbols (out-of-bounds
    // reads; ten such inputs in one 8-minute run).
    const std::string fuzz = SPADE_FUZZ_DIR;
    const std::vector<uint8_t> crash = read_file(fuzz + "/crashes/image/jpeg-scan-undefined-huffman-table-oob-read.jpg");
    CHECK(error_of([&] { decode_image(crash.data(), crash.size(), "scan.jpg"); }) ==
          "scan.jpg: corrupt JPEG (the scan at byte 43 uses AC Huffman table 1, which no earlier DHT segment defines)");
    // small.jpg's DC table 0 (the DHT segment at byte 177: FF C4, length, class/index 0x00, 16
    // counts) with its first symbol made 32: stb would shift by it.
    std::vector<uint8_t> jpg = read_file(fuzz + "/corpus/image/small.jpg");
    REQUIRE(jpg.size() > 200);
    REQUIRE((jpg[177] == 0xFF && jpg[178] == 0xC4 && jpg[181] == 0x00));
    jpg[177 + 5 + 16] = 32;
    CHECK(error_of([&] { decode_image(jpg.data(), jpg.size(), "dc.jpg"); }) ==
          "dc.jpg: corrupt JPEG (Huffman table 0 of the segment at byte 177 is a DC table with the symbol 32, above 15)");
    // Dropping that DC table leaves the scan without it.
    std::vector<uint8_t> no_dc = read_file(fuzz + "/corpus/image/small.jpg");
    const size_t dht_length = size_t(no_dc[179]) << 8 | no_dc[180];
    no_dc.erase(no_dc.begin() + 177, no_dc.begin() + 177 + 2 + dht_length);
    CHECK(error_of([&] { decode_image(no_dc.data(), no_dc.size(), "nodc.jpg"); }).find(
              "uses DC Huffman table 0, which no earlier DHT segment defines") != std::string::npos);
  }
  SECTION("a JPEG far too small for its dimensions, and a GIF over the GIF limit") {
    // Found by fuzzing: 71 bytes declaring 27436x4103 (stb decoded zeros for seconds), and a
    // 14-byte GIF declaring 17993x14136 (stb allocated 2.4 GB for its screen buffers).
    const std::string fuzz = SPADE_FUZZ_DIR;
    const std::vector<uint8_t> jpg = read_file(fuzz + "/crashes/image/jpeg-112mpixel-71-bytes-slow.jpg");
    CHECK(error_of([&] { decode_image(jpg.data(), jpg.size(), "big.jpg"); }) ==
          "big.jpg: truncated JPEG (its header declares 27436x4103, whose 1759590 blocks need at least 219949 "
          "bytes, but the file has 71)");  // 3430 x 513 blocks of 8x8
    const std::vector<uint8_t> gif = read_file(fuzz + "/crashes/image/gif-254mpixel-14-bytes-oom.gif");
    CHECK(error_of([&] { decode_image(gif.data(), gif.size(), "big.gif"); }) ==
          "big.gif: GIF is 17993x14136, larger than the limit of 16777216 pixels for GIFs");
    const std::vector<uint8_t> ok = read_file(fuzz + "/corpus/image/small.gif");
    CHECK(decode_image(ok.data(), ok.size(), "small.gif").width > 0);
  }
  SECTION("not an image") {
    const std::string text = "hello, this is plain text and not an image at all\n";
    std::string msg = error_of([&] { decode_image(reinterpret_cast<const uint8_t*>(text.data()), text.size(), "notes.txt"); });
    CHECK(msg.find("notes.txt") != std::string::npos);
  }
  SECTION("empty file on disk") {
    const std::string path = test::temp_dir() + "/empty.png";
    write_file_atomic(path, "");
    std::string msg = error_of([&] { load_image(path); });
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find("empty") != std::string::npos);
  }
  SECTION("missing file") {
    CHECK(error_of([] { load_image("/nonexistent/spade/x.png"); }).find("/nonexistent/spade/x.png") != std::string::npos);
  }
  SECTION("BMP header claiming 100000x100000") {
    const std::vector<uint8_t> b = bmp_header(100000, 100000);
    std::string msg = error_of([&] { decode_image(b.data(), b.size(), "huge.bmp"); });
    CHECK(msg.find("huge.bmp") != std::string::npos);
    CHECK(msg.find("100000x100000") != std::string::npos);
  }
  SECTION("BMP within the side limit but with too many pixels") {
    // 20000 x 20000 = 400M pixels; stb would happily allocate 1.2 GB for it.
    const std::vector<uint8_t> b = bmp_header(20000, 20000);
    std::string msg = error_of([&] { decode_image(b.data(), b.size(), "big.bmp"); });
    CHECK(msg.find("big.bmp") != std::string::npos);
    CHECK(msg.find("20000x20000") != std::string::npos);
  }
  SECTION("PNG header claiming 100000x100000") {
    const std::vector<uint8_t> b = png_header(100000, 100000);
    std::string msg = error_of([&] { decode_image(b.data(), b.size(), "huge.png"); });
    CHECK(msg.find("huge.png") != std::string::npos);
  }
}

TEST_CASE("save_png then load_image round-trips exactly", "[image]") {
  const Image src = load_image(image_path("src_tall.png"));
  const std::string path = test::temp_dir() + "/out/round.png";
  save_png(path, src);
  CHECK(differing_bytes(load_image(path), src) == 0);

  const Image odd = gradient(1, 3);
  save_png(path, odd);  // overwrites
  CHECK(differing_bytes(load_image(path), odd) == 0);

  Image broken = gradient(4, 4);
  broken.rgb.pop_back();
  CHECK_THROWS_AS(save_png(path, broken), Error);
}

TEST_CASE("tensor_to_image inverts preprocess_image and clamps", "[image]") {
  const Image src = load_image(image_path("src.png"));
  Preprocess p;
  const Tensor t = preprocess_image(src, p);
  CHECK(differing_bytes(tensor_to_image(t, p.mean, p.std), src) == 0);
  CHECK(differing_bytes(tensor_to_image(t.reshape({3, src.height, src.width}), p.mean, p.std), src) == 0);

  Tensor odd = Tensor::from_vector({1, 3, 1, 2}, {100.f, -100.f, std::numeric_limits<float>::quiet_NaN(), 0.5f, 0.f, 1.f});
  const Image im = tensor_to_image(odd, {0.f, 0.f, 0.f}, {1.f, 1.f, 1.f});
  REQUIRE(im.width == 2);
  REQUIRE(im.height == 1);
  CHECK(im.rgb == std::vector<uint8_t>{255, 0, 0, 0, 128, 255});  // (R,G,B) of pixel 0, then pixel 1

  CHECK_THROWS_AS(tensor_to_image(Tensor::zeros({2, 3, 4, 4}), p.mean, p.std), Error);
  CHECK_THROWS_AS(tensor_to_image(Tensor::zeros({4, 4}), p.mean, p.std), Error);
}

TEST_CASE("geometry functions validate their arguments", "[image]") {
  const Image im = gradient(5, 4);
  CHECK_THROWS_AS(resize_image(im, 0, 3), Error);
  CHECK_THROWS_AS(resize_image(im, 3, -1), Error);
  CHECK_THROWS_AS(resize_image(im, 40000, 2), Error);
  CHECK_THROWS_AS(resize_shorter_side(im, 0), Error);
  CHECK_THROWS_AS(center_crop(im, 0, 2), Error);
  Image broken = im;
  broken.width = 6;
  CHECK_THROWS_AS(resize_image(broken, 3, 3), Error);
  CHECK_THROWS_AS(center_crop(broken, 3, 3), Error);
  CHECK_THROWS_AS(preprocess_image(broken, Preprocess{}), Error);
  Preprocess zero_std;
  zero_std.std = {1.f, 0.f, 1.f};
  CHECK_THROWS_AS(preprocess_image(im, zero_std), Error);

  // Same size is the identity, as in PIL.
  CHECK(differing_bytes(resize_image(im, 5, 4), im) == 0);
  CHECK(differing_bytes(resize_shorter_side(im, 4), im) == 0);
}

TEST_CASE("a top-down BMP (negative height) decodes like the same image stored bottom-up", "[image]") {
  // 1 pixel wide, 3 rows: red, green, blue from the top. Rows are padded to 4 bytes, pixels are BGR.
  const uint8_t top_to_bottom[3][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
  auto bmp = [&](bool top_down) {
    std::vector<uint8_t> b = bmp_header(1, top_down ? -3 : 3);
    for (int r = 0; r < 3; ++r) {
      const uint8_t* rgb = top_to_bottom[top_down ? r : 2 - r];
      b.insert(b.end(), {rgb[2], rgb[1], rgb[0], 0});
    }
    put_le(b, 2, uint32_t(b.size()), 4);
    return b;
  };
  const std::vector<uint8_t> td = bmp(true), bu = bmp(false);
  const Image a = decode_image(td.data(), td.size(), "top_down.bmp");
  const Image b = decode_image(bu.data(), bu.size(), "bottom_up.bmp");
  REQUIRE(a.width == 1);
  REQUIRE(a.height == 3);
  CHECK(a.rgb == b.rgb);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) CHECK(a.rgb[size_t(r * 3 + c)] == top_to_bottom[r][c]);
}
