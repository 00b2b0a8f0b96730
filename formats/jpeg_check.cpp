#include "formats/jpeg_check.h"

#include "engine/error.h"

namespace spade {

namespace {

// The marker segments as stb reads them (stbi__process_marker, stbi__process_scan_header). Bytes
// past the end of the data read as 0, as stb's do.
struct TableWalker {
  const uint8_t* data;
  size_t size;
  const std::string& name;
  bool defined[2][4] = {};  // [DC, AC][table index]: built by a DHT segment so far
  bool progressive = false;

  int byte(size_t i) const { return i < size ? data[i] : 0; }
  [[noreturn]] void fail(const std::string& why) const { throw Error(name + ": corrupt JPEG (" + why + ")"); }

  // A DHT segment (`at`: its length field): a class/index byte, 16 counts, then as many symbols
  // as the counts add up to, until the segment length is used up.
  void dht(size_t at, int64_t length) {
    int64_t left = length - 2;
    size_t p = at + 2;
    for (int table = 0; left > 0; ++table) {
      const int q = byte(p++), cls = q >> 4, index = q & 15;
      if (cls > 1 || index > 3) return;  // stb refuses the header itself
      int64_t codes = 0;
      for (int i = 0; i < 16; ++i) codes += byte(p++);
      const std::string which = "Huffman table " + std::to_string(table) + " of the segment at byte " + std::to_string(at - 2);
      if (codes > 256) fail(which + " declares " + std::to_string(codes) + " codes, at most 256 are possible");
      // A DC symbol is the bit length of the next difference: stb shifts by it unchecked.
      if (cls == 0)
        for (int64_t i = 0; i < codes; ++i)
          if (byte(p + size_t(i)) > 15)
            fail(which + " is a DC table with the symbol " + std::to_string(byte(p + size_t(i))) + ", above 15");
      defined[cls][index] = true;
      p += static_cast<size_t>(codes);
      left -= 17 + codes;
      if (p > size) return;  // the rest reads as zeros: empty tables
    }
  }

  // A scan header: every Huffman table the scan decodes with must exist. stb does not check, and
  // decodes with whatever its never-initialised tables hold (out-of-bounds reads, found by
  // fuzzing).
  void sos(size_t at) {
    const int n = byte(at + 2);
    if (n < 1 || n > 4) return;  // stb refuses it
    const size_t after = at + 3 + 2 * size_t(n);
    const int spectral_start = byte(after), high = byte(after + 2) >> 4;
    for (int c = 0; c < n; ++c) {
      const int q = byte(at + 4 + 2 * size_t(c)), dc = q >> 4, ac = q & 15;
      if (dc > 3 || ac > 3) return;  // stb refuses it
      // Baseline scans decode both; progressive ones DC (first pass only) or AC.
      const bool uses_dc = progressive ? spectral_start == 0 && high == 0 : true;
      const bool uses_ac = progressive ? spectral_start != 0 : true;
      auto missing = [&](const char* kind, int index) {
        fail("the scan at byte " + std::to_string(at - 2) + " uses " + kind + " Huffman table " + std::to_string(index) +
             ", which no earlier DHT segment defines");
      };
      if (uses_dc && !defined[0][dc]) missing("DC", dc);
      if (uses_ac && !defined[1][ac]) missing("AC", ac);
    }
  }
};

}  // namespace

bool is_jpeg(const uint8_t* data, size_t size) {
  return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

void check_jpeg_huffman_tables(const uint8_t* data, size_t size, const std::string& name) {
  TableWalker tables{data, size, name};
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
    if (marker == 0xC4) tables.dht(pos, length);
    if (marker == 0xC0 || marker == 0xC1 || marker == 0xC2) tables.progressive = marker == 0xC2;
    if (marker == 0xDA) tables.sos(pos);
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
