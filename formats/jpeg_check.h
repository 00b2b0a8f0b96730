#pragma once
// A JPEG's Huffman tables and its size checked before stb reads them. stb_image 2.27 (Debian's)
// trusts them: a DHT segment whose counts add up to more than 256 codes makes it write past its
// arrays, a scan using a table no DHT segment defined makes it read its never-initialised memory
// and index out of bounds, a JPEG far too short for its dimensions keeps it decoding zeros (all
// found by fuzzing with stb compiled under the sanitizers; the inputs are in fuzz/crashes/image).
// stb reads tables placed before the frame header already for stbi_info, so the check runs first.
#include <cstddef>
#include <cstdint>
#include <string>

namespace spade {

// True for data that starts with a JPEG's start-of-image marker (FF D8 FF).
bool is_jpeg(const uint8_t* data, size_t size);

// Walks the marker segments as stb does (skipping junk between them and each scan's entropy-coded
// data) and throws Error naming `name` when a Huffman table declares more than 256 codes, a DC
// table has a symbol above 15, or a scan uses a table no earlier segment defined (libjpeg refuses
// all three too). Anything else that is malformed is left to stb, which refuses it.
void check_jpeg_huffman_tables(const uint8_t* data, size_t size, const std::string& name);

// Throws Error naming `name` when a JPEG of `size` bytes cannot hold a w x h image: every 8x8
// block of its full-resolution component takes at least one bit (its DC code) in any complete
// JPEG, and there are at least ceil(w/8) * ceil(h/8) of them. stb reads
// missing data as zeros, so 71 bytes declaring 112M pixels kept it decoding for seconds (found by
// fuzzing).
void check_jpeg_size(size_t size, int w, int h, const std::string& name);

}  // namespace spade
