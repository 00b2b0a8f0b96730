#include "formats/jpeg_check.h"

#include "engine/error.h"

namespace spade {

namespace {

// One DHT segment's tables, read as stb reads them (stbi__process_marker): a class/index byte,
// 16 counts, then as many symbols as the counts add up to, until the segment length is used up.
// Bytes past the end of the data read as 0, as stb's do.
void check_dht(const uint8_t* data, size_t size, size_t at, int64_t length, const std::string& name) {
  auto byte = [&](size_t i) -> int { return i < size ? data[i] : 0; };
  int64_t left = length - 2;
  size_t p = at + 2;
  int table = 0;
  while (left > 0) {
    const int q = byte(p++);
    if ((q >> 4) > 1 || (q & 15) > 3) return;  // stb refuses the header itself
    int64_t codes = 0;
    for (int i = 0; i < 16; ++i) codes += byte(p++);
    if (codes > 256)
      throw Error(name + ": corrupt JPEG (Huffman table " + std::to_string(table) + " of the segment at byte " +
                  std::to_string(at - 2) + " declares " + std::to_string(codes) + " codes, at most 256 are possible)");
    p += static_cast<size_t>(codes);
    left -= 17 + codes;
    ++table;
    if (p > size) return;  // the rest reads as zeros: empty tables
  }
}

}  // namespace

bool is_jpeg(const uint8_t* data, size_t size) {
  return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

void check_jpeg_huffman_tables(const uint8_t* data, size_t size, const std::string& name) {
  size_t pos = 2;  // after the start-of-image marker
  while (pos < size) {
    if (data[pos] != 0xFF) {  // junk between segments: stb skips it looking for the next marker
      ++pos;
      continue;
    }
    while (pos < size && data[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= size) return;
    const int marker = data[pos++];
    if (marker == 0xD9) return;                                         // end of image
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // no length field
    if (pos + 2 > size) return;
    const int64_t length = int64_t(data[pos]) << 8 | data[pos + 1];
    if (length < 2) return;
    if (marker == 0xC4) check_dht(data, size, pos, length, name);
    pos += static_cast<size_t>(length);
    if (marker == 0xDA) {
      // Entropy-coded data up to the next marker: 0xFF followed by 0x00 is a data byte, by
      // 0xD0-0xD7 a restart marker inside the scan, by 0xFF a fill byte.
      while (pos + 1 < size) {
        const int next = data[pos + 1];
        if (data[pos] == 0xFF && next != 0x00 && next != 0xFF && !(next >= 0xD0 && next <= 0xD7)) break;
        ++pos;
      }
      if (pos + 1 >= size) return;
    }
  }
}

void check_jpeg_size(size_t size, int w, int h, const std::string& name) {
  const uint64_t blocks = (uint64_t(w) + 7) / 8 * ((uint64_t(h) + 7) / 8);
  if (uint64_t(size) * 8 < blocks)
    throw Error(name + ": truncated JPEG (its header declares " + std::to_string(w) + "x" + std::to_string(h) +
                ", whose " + std::to_string(blocks) + " blocks need at least " + std::to_string((blocks + 7) / 8) +
                " bytes, but the file has " + std::to_string(size) + ")");
}

}  // namespace spade
