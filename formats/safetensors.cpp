#include "formats/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "formats/file_io.h"

namespace spade {

// Tensor bytes are reinterpreted in place, so the host must share the format's byte order.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors reader assumes a little-endian host");

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100000000;  // the limit the reference implementation uses
// A safetensors header is at most three levels deep; refusing deeper nesting keeps a hostile
// header from costing unbounded memory in the JSON parser.
constexpr int kMaxJsonDepth = 8;
const char* const kMetadataKey = "__metadata__";

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

const DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},       {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},   {DType::U16, "U16", 2},     {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},   {DType::I64, "I64", 8},     {DType::U64, "U64", 8},
    {DType::F16, "F16", 2},   {DType::BF16, "BF16", 2},   {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};

const DTypeInfo& info(DType d) {
  for (const DTypeInfo& i : kDTypes)
    if (i.dtype == d) return i;
  throw Error("invalid DType value " + std::to_string(static_cast<int>(d)));
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string quoted(const std::string& s) { return "'" + printable(s) + "'"; }

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float32 (it is a normal float there).
    float mag = std::ldexp(static_cast<float>(mant), -24);
    std::memcpy(&bits, &mag, 4);
    bits |= sign;
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf, or NaN keeping its payload
  } else {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Element-wise load through memcpy because the data section need not be aligned for T.
template <typename T, typename Convert>
void convert_elements(const uint8_t* src, float* dst, int64_t n, Convert convert) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    dst[i] = convert(v);
  }
}

template <typename T>
void convert_cast(const uint8_t* src, float* dst, int64_t n) {
  convert_elements<T>(src, dst, n, [](T v) { return static_cast<float>(v); });
}

// A JSON value that must be a non-negative integer; the problem is reported by the caller.
bool as_u64(const json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  *out = v.get<uint64_t>();
  return true;
}

bool is_bookkeeping(const std::string& name) {
  const std::string suffix = "num_batches_tracked";
  if (name == suffix) return true;
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
         name[name.size() - suffix.size() - 1] == '.';
}

}  // namespace

const char* dtype_name(DType d) { return info(d).name; }
size_t dtype_size(DType d) { return info(d).size; }

bool dtype_from_name(const std::string& name, DType* out) {
  for (const DTypeInfo& i : kDTypes) {
    if (name == i.name) {
      *out = i.dtype;
      return true;
    }
  }
  return false;
}

bool dtype_is_float(DType d) {
  return d == DType::F16 || d == DType::BF16 || d == DType::F32 || d == DType::F64 || d == DType::F8_E4M3 ||
         d == DType::F8_E5M2;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  file_ = std::make_unique<MappedFile>(path);
  const uint8_t* bytes = file_->data();
  const uint64_t size = file_->size();
  if (size < 8)
    fail("file is " + std::to_string(size) + " bytes, too short for a safetensors header (need at least 8)");
  const uint64_t n = read_u64_le(bytes);
  if (n > kMaxHeaderBytes)
    fail("header length " + std::to_string(n) + " exceeds the 100000000-byte limit");
  if (n > size - 8)
    fail("header length " + std::to_string(n) + " runs past the end of the " + std::to_string(size) +
         "-byte file (truncated?)");
  data_start_ = 8 + n;
  parse_header(bytes + 8, n);
  check_layout(size - data_start_);
}

SafetensorsFile::~SafetensorsFile() = default;
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;

void SafetensorsFile::fail(const std::string& problem) const { throw Error(path_ + ": safetensors: " + problem); }

void SafetensorsFile::parse_header(const uint8_t* text, size_t size) {
  // The format requires the JSON to open the header; this also refuses a leading BOM or blank.
  if (size == 0 || text[0] != '{') fail("header is not a JSON object (it must start with '{')");

  // nlohmann keeps only the last of duplicate keys, which would silently hide a tensor, so
  // the parser callback tracks the keys of every open object and refuses repeats.
  std::vector<std::set<std::string>> open_objects;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) fail("header JSON is nested more than " + std::to_string(kMaxJsonDepth) + " levels deep");
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second)
          fail("duplicate key " + quoted(parsed.get<std::string>()) + " in header JSON");
        break;
      default:
        break;
    }
    return true;
  };
  json header;
  try {
    const char* begin = reinterpret_cast<const char*>(text);
    header = json::parse(begin, begin + size, callback);
  } catch (const json::exception& e) {
    fail("header is not valid UTF-8 JSON (" + printable(e.what(), true) + ")");
  }
  if (!header.is_object()) fail("header JSON is not an object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& value = it.value();
    if (name == kMetadataKey) {
      if (!value.is_object()) fail("\"__metadata__\" is not a JSON object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string())
          fail("\"__metadata__\" value for key " + quoted(m.key()) + " is " + m.value().type_name() +
               ", expected a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor " + quoted(name) + ": ";
    if (!value.is_object()) fail(where + "entry is " + value.type_name() + ", expected an object");

    SafetensorsEntry e;
    e.name = name;
    auto dt = value.find("dtype");
    if (dt == value.end()) fail(where + "missing \"dtype\"");
    if (!dt->is_string()) fail(where + "\"dtype\" is not a string");
    if (!dtype_from_name(dt->get<std::string>(), &e.dtype)) fail(where + "unknown dtype " + quoted(dt->get<std::string>()));

    auto sh = value.find("shape");
    if (sh == value.end()) fail(where + "missing \"shape\"");
    if (!sh->is_array()) fail(where + "\"shape\" is not an array");
    // Count elements in unsigned arithmetic with overflow checks: a hostile shape must be
    // refused here, never turned into a wrapped-around (small) allocation later.
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : *sh) {
      uint64_t dim = 0;
      if (!as_u64(d, &dim)) fail(where + "shape entry " + d.dump() + " is not a non-negative integer");
      if (dim > static_cast<uint64_t>(INT64_MAX)) fail(where + "shape entry " + d.dump() + " is too large");
      e.shape.push_back(static_cast<int64_t>(dim));
      overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
    }
    uint64_t nbytes = 0;
    overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(e.dtype)), &nbytes);
    if (overflow) fail(where + "shape " + shape_str(e.shape) + " is too large (byte size overflows)");

    auto off = value.find("data_offsets");
    if (off == value.end()) fail(where + "missing \"data_offsets\"");
    if (!off->is_array() || off->size() != 2 || !as_u64((*off)[0], &e.begin) || !as_u64((*off)[1], &e.end))
      fail(where + "\"data_offsets\" " + off->dump() + " is not [begin, end] with non-negative integers");
    if (e.begin > e.end) fail(where + "\"data_offsets\" " + off->dump() + " has begin > end");
    if (e.end - e.begin != nbytes)
      fail(where + "\"data_offsets\" " + off->dump() + " span " + std::to_string(e.end - e.begin) + " bytes but " +
           dtype_name(e.dtype) + " shape " + shape_str(e.shape) + " needs " + std::to_string(nbytes));
    entries_.push_back(std::move(e));
  }
}

void SafetensorsFile::check_layout(uint64_t data_size) {
  std::sort(entries_.begin(), entries_.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t expected = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& e : entries_) {
    if (e.begin < expected)
      fail("tensor " + quoted(e.name) + " data [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
           ") overlaps tensor " + quoted(previous->name));
    if (e.begin > expected)
      fail("hole in the data section: bytes [" + std::to_string(expected) + ", " + std::to_string(e.begin) +
           ") before tensor " + quoted(e.name) + " belong to no tensor");
    if (e.end > data_size)
      fail("tensor " + quoted(e.name) + " data ends at byte " + std::to_string(e.end) + " but the data section is only " +
           std::to_string(data_size) + " bytes (truncated file?)");
    expected = e.end;
    previous = &e;
  }
  if (expected != data_size)
    fail(std::to_string(data_size - expected) + " trailing bytes after the last tensor's data");
  for (size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("no tensor named " + quoted(name));
  return entries_[it->second];
}

const uint8_t* SafetensorsFile::raw_data(const SafetensorsEntry& e) const {
  return file_->data() + data_start_ + e.begin;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  if (e.dtype == DType::F8_E4M3 || e.dtype == DType::F8_E5M2)
    fail("tensor " + quoted(name) + " has dtype " + dtype_name(e.dtype) + ", which cannot be converted to float32");
  Tensor t;
  try {
    t = Tensor::empty(e.shape);
  } catch (const Error& err) {
    fail("tensor " + quoted(name) + ": " + err.what());
  }
  const uint8_t* src = raw_data(e);
  float* dst = t.data();
  const int64_t n = t.numel();
  switch (e.dtype) {
    case DType::F32:
      if (n) std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      break;
    case DType::F16: convert_elements<uint16_t>(src, dst, n, half_to_float); break;
    case DType::BF16: convert_elements<uint16_t>(src, dst, n, bf16_to_float); break;
    case DType::F64: convert_cast<double>(src, dst, n); break;
    case DType::BOOL:
      convert_elements<uint8_t>(src, dst, n, [](uint8_t v) { return v ? 1.f : 0.f; });
      break;
    case DType::U8: convert_cast<uint8_t>(src, dst, n); break;
    case DType::I8: convert_cast<int8_t>(src, dst, n); break;
    case DType::I16: convert_cast<int16_t>(src, dst, n); break;
    case DType::U16: convert_cast<uint16_t>(src, dst, n); break;
    case DType::I32: convert_cast<int32_t>(src, dst, n); break;
    case DType::U32: convert_cast<uint32_t>(src, dst, n); break;
    case DType::I64: convert_cast<int64_t>(src, dst, n); break;
    case DType::U64: convert_cast<uint64_t>(src, dst, n); break;
    case DType::F8_E4M3:
    case DType::F8_E5M2: break;  // refused above
  }
  return t;
}

std::map<std::string, Tensor> load_safetensors(const std::string& path) {
  SafetensorsFile file(path);
  std::map<std::string, Tensor> out;
  for (const SafetensorsEntry& e : file.entries()) {
    if (is_bookkeeping(e.name)) continue;
    if (!dtype_is_float(e.dtype))
      throw Error(path + ": safetensors: tensor " + quoted(e.name) + " has dtype " + dtype_name(e.dtype) +
                  ", expected a floating-point dtype");
    out.emplace(e.name, file.tensor(e.name));
  }
  return out;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  auto fail = [&](const std::string& problem) { throw Error(path + ": cannot save safetensors: " + problem); };
  // ordered_json keeps the header in the caller's order, which is also the data order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& kv : metadata) meta[kv.first] = kv.second;
    header[kMetadataKey] = meta;
  }
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    if (name == kMetadataKey) fail("a tensor may not be named \"__metadata__\"");
    if (!names.insert(name).second) fail("duplicate tensor name " + quoted(name));
    if (!t.defined()) fail("tensor " + quoted(name) + " is undefined");
    if (t.device() != Device::CPU) fail("tensor " + quoted(name) + " is not on the CPU");
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * 4;
    header[name] = {{"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    fail(std::string("header cannot be written as JSON (") + e.what() + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<uint8_t> bytes(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(bytes.data() + 8, text.data(), text.size());
  uint8_t* dst = bytes.data() + 8 + text.size();
  for (const auto& named : tensors) {
    const size_t nbytes = static_cast<size_t>(named.second.numel()) * 4;
    if (nbytes) std::memcpy(dst, named.second.data(), nbytes);
    dst += nbytes;
  }
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace spade
