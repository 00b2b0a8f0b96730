#pragma once
// A PNG's compressed pixel data checked before stb decodes it. stb's inflater (as Debian ships it)
// reads past the end of a truncated zlib stream as zeros and grows its buffer until it runs out
// of room, so a 69-byte PNG made it allocate 2 GB. Here the IDAT stream is inflated with zlib into
// a fixed scratch buffer, counting bytes: it must end cleanly and be no larger than the image its
// header declares needs.
#include <cstddef>
#include <cstdint>
#include <string>

namespace spade {

// True for data that starts with the PNG signature.
bool is_png(const uint8_t* data, size_t size);

// Throws Error naming `name` when the chunks are malformed, the header is not the first chunk,
// the compressed data is corrupt or incomplete, or it inflates to more or less than the declared
// image needs.
void check_png_stream(const uint8_t* data, size_t size, const std::string& name);

}  // namespace spade
