#include "formats/png_check.h"

#include <zlib.h>

#include <cstring>
#include <vector>

#include "engine/error.h"

namespace spade {

namespace {

const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

// Samples per pixel of a PNG colour type (grey, RGB, palette, grey + alpha, RGBA); 0 for others.
int png_channels(int colour_type) {
  switch (colour_type) {
    case 0: return 1;
    case 2: return 3;
    case 3: return 1;
    case 4: return 2;
    case 6: return 4;
    default: return 0;
  }
}

// Bytes of filtered scanlines an image of this header needs: one filter byte per row plus the
// packed samples; interlaced images have up to seven passes, each adding a filter byte and at most
// one partial byte per row.
uint64_t raw_size_bound(uint64_t w, uint64_t h, int bit_depth, int colour_type, bool interlaced) {
  const int channels = png_channels(colour_type);
  if (channels == 0) return 0;
  const uint64_t row = (w * uint64_t(channels) * uint64_t(bit_depth) + 7) / 8;
  uint64_t bound = h * (1 + row);
  if (interlaced) bound += 7 * (2 * h + 1);
  return bound;
}

// Exactly the bytes of filtered scanlines the header's image has: per row a filter byte and the
// packed samples, over the seven Adam7 passes (those with pixels) when interlaced.
uint64_t raw_size_exact(uint64_t w, uint64_t h, int bit_depth, int colour_type, bool interlaced) {
  const int channels = png_channels(colour_type);
  auto bytes = [&](uint64_t pw, uint64_t ph) { return ph * (1 + (pw * uint64_t(channels) * uint64_t(bit_depth) + 7) / 8); };
  if (!interlaced) return bytes(w, h);
  static const int kPass[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                  {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};  // x0, y0, dx, dy
  uint64_t total = 0;
  for (const auto& p : kPass) {
    const uint64_t pw = w > uint64_t(p[0]) ? (w - p[0] + p[2] - 1) / p[2] : 0;
    const uint64_t ph = h > uint64_t(p[1]) ? (h - p[1] + p[3] - 1) / p[3] : 0;
    if (pw > 0 && ph > 0) total += bytes(pw, ph);
  }
  return total;
}

}  // namespace

bool is_png(const uint8_t* data, size_t size) { return size >= 8 && std::memcmp(data, kSignature, 8) == 0; }

void check_png_stream(const uint8_t* data, size_t size, const std::string& name) {
  auto fail = [&](const std::string& why) { throw Error(name + ": corrupt PNG (" + why + ")"); };
  if (!is_png(data, size)) fail("no PNG signature");
  size_t pos = 8;
  uint64_t bound = 0, needed = 0;
  bool header = false, end = false;
  z_stream z;
  std::memset(&z, 0, sizeof z);
  if (inflateInit(&z) != Z_OK) fail("cannot start zlib");
  std::vector<uint8_t> scratch(1 << 16);
  uint64_t inflated = 0;
  bool stream_end = false;
  try {
    while (!end) {
      if (size - pos < 12) fail("truncated chunk");
      const uint32_t len = be32(data + pos);
      const uint8_t* type = data + pos + 4;
      if (len > size - pos - 12) fail("chunk longer than the file");
      const uint8_t* body = data + pos + 8;
      if (!header) {
        if (std::memcmp(type, "IHDR", 4) != 0 || len != 13) fail("the first chunk is not a 13-byte IHDR");
        bound = raw_size_bound(be32(body), be32(body + 4), body[8], body[9], body[12] == 1);
        needed = raw_size_exact(be32(body), be32(body + 4), body[8], body[9], body[12] == 1);
        if (bound == 0) fail("unsupported colour type");
        header = true;
      } else if (std::memcmp(type, "IDAT", 4) == 0) {
        if (stream_end) {
          if (len > 0) fail("data after the end of the compressed stream");
        } else {
          z.next_in = const_cast<Bytef*>(body);
          z.avail_in = len;
          while (z.avail_in > 0 && !stream_end) {
            z.next_out = scratch.data();
            z.avail_out = uInt(scratch.size());
            const int rc = inflate(&z, Z_NO_FLUSH);
            inflated += scratch.size() - z.avail_out;
            if (inflated > bound) fail("the pixel data inflates to more than the header's image size");
            if (rc == Z_STREAM_END) stream_end = true;
            else if (rc != Z_OK && rc != Z_BUF_ERROR) fail(std::string("zlib: ") + (z.msg ? z.msg : "error"));
            else if (rc == Z_BUF_ERROR && z.avail_out != 0) break;  // needs more input: the next IDAT
          }
        }
      } else if (std::memcmp(type, "IEND", 4) == 0) {
        end = true;
      }
      pos += size_t(len) + 12;
    }
  } catch (...) {
    inflateEnd(&z);
    throw;
  }
  inflateEnd(&z);
  if (!stream_end) fail("the compressed pixel data is incomplete");
  // stb would allocate the whole image before finding the data short (a bomb when the header
  // claims millions of pixels that a few bytes cannot hold).
  if (inflated < needed)
    fail("the pixel data inflates to " + std::to_string(inflated) + " bytes, the header's image needs " +
         std::to_string(needed));
}

}  // namespace spade
