// Names, checksums and JSON records of the checkpoint format (docs/checkpoints.md).
#include "io/checkpoint_format.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "io/safetensors_util.hpp"
#include "magix/error.hpp"

namespace magix::ckpt {

namespace fs = std::filesystem;
using nlohmann::json;

std::string step_name(int64_t step) {
  MAGIX_CHECK(step >= 0, "checkpoint step must be >= 0, got {}", step);
  return fmt::format("{:06d}", step);
}

std::optional<int64_t> parse_step_name(std::string_view name) {
  if (name.empty() || name.size() > 18) return std::nullopt;
  int64_t v = 0;
  for (char c : name) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

uint64_t checksum(const void* data, size_t n) {
  return static_cast<uint64_t>(XXH3_64bits(data, n));
}

std::string checksum_hex(uint64_t h) {
  return fmt::format("{:016x}", h);
}

std::optional<uint64_t> parse_checksum_hex(std::string_view s) {
  if (s.size() != 16) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return std::nullopt;
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return v;
}

std::string rank_file(const std::string& item, int rank) {
  return fmt::format("{}/rank-{:05d}.bin", item, rank);
}

std::string rank_list_file(int rank) {
  return fmt::format(".shards-rank-{:05d}.json", rank);
}

void check_item_name(const std::string& item) {
  bool ok = !item.empty() && item.size() <= 64 && item[0] != '-';
  for (char c : item) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-');
  }
  MAGIX_CHECK(ok, "invalid checkpoint item name '{}' (letters, digits, '_' and '-' only)", item);
}

json shard_to_json(const ShardRecord& s) {
  return json{{"file", s.file},   {"offset", s.offset}, {"nbytes", s.nbytes},
              {"start", s.start}, {"extent", s.extent}, {"xxh3", checksum_hex(s.xxh3)}};
}

json shard_list_to_json(const std::vector<ShardRecord>& shards) {
  json list = json::array();
  for (const ShardRecord& s : shards) {
    json j = shard_to_json(s);
    j["item"] = s.item;
    j["tensor"] = s.tensor;
    j["dtype"] = std::string(dtype_name(s.dtype));
    j["shape"] = s.global_shape;
    list.push_back(std::move(j));
  }
  return list;
}

namespace {

Shape shape_from_json(const json& j, const char* key) {
  MAGIX_CHECK(j.contains(key) && j.at(key).is_array(), "\"{}\" must be a list of integers", key);
  Shape s;
  for (const json& d : j.at(key)) {
    MAGIX_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0,
                "\"{}\" must be a list of non-negative integers", key);
    s.push_back(d.get<int64_t>());
  }
  return s;
}

uint64_t u64_from_json(const json& j, const char* key) {
  MAGIX_CHECK(j.contains(key) && j.at(key).is_number_unsigned(),
              "\"{}\" must be a non-negative integer", key);
  return j.at(key).get<uint64_t>();
}

std::string string_from_json(const json& j, const char* key) {
  MAGIX_CHECK(j.contains(key) && j.at(key).is_string(), "\"{}\" must be a string", key);
  return j.at(key).get<std::string>();
}

}  // namespace

std::vector<ShardRecord> shard_list_from_json(const json& list) {
  MAGIX_CHECK(list.is_array(), "a shard list must be a JSON list");
  std::vector<ShardRecord> out;
  for (const json& j : list) {
    MAGIX_CHECK(j.is_object(), "a shard must be a JSON object");
    ShardRecord s;
    s.item = string_from_json(j, "item");
    s.tensor = string_from_json(j, "tensor");
    auto dt = dtype_from_name(string_from_json(j, "dtype"));
    MAGIX_CHECK(dt.has_value(), "unknown dtype {}", j.at("dtype").dump());
    s.dtype = *dt;
    s.global_shape = shape_from_json(j, "shape");
    s.start = shape_from_json(j, "start");
    s.extent = shape_from_json(j, "extent");
    s.file = string_from_json(j, "file");
    s.offset = u64_from_json(j, "offset");
    s.nbytes = u64_from_json(j, "nbytes");
    auto h = parse_checksum_hex(string_from_json(j, "xxh3"));
    MAGIX_CHECK(h.has_value(), "\"xxh3\" must be 16 lowercase hex digits");
    s.xxh3 = *h;
    out.push_back(std::move(s));
  }
  return out;
}

StepIndex parse_index(std::string_view text) {
  const json index = io::parse_json_strict(text, 64);
  StepIndex out;
  MAGIX_CHECK(index.is_object(), "not a JSON object");
  MAGIX_CHECK(index.contains("format") && index.at("format").is_string() &&
                  index.at("format").get<std::string>() == kFormatName,
              "\"format\" is not \"{}\"", kFormatName);
  MAGIX_CHECK(index.contains("version") && index.at("version").is_number_integer(),
              "no integer \"version\"");
  const int version = index.at("version").get<int>();
  MAGIX_CHECK(version == kFormatVersion,
              "format version {} is not supported (this build reads version {})", version,
              kFormatVersion);
  MAGIX_CHECK(index.contains("step") && index.at("step").is_number_integer(),
              "no integer \"step\"");
  out.step = index.at("step").get<int64_t>();
  MAGIX_CHECK(index.contains("files") && index.at("files").is_object(), "no \"files\" object");
  for (const auto& [fname, f] : index.at("files").items()) {
    check_relative_path(fname, "\"files\"");
    MAGIX_CHECK(fname.find('/') == std::string::npos, "\"files\": '{}' is not a plain name", fname);
    MAGIX_CHECK(f.is_object() && f.contains("nbytes") && f.at("nbytes").is_number_unsigned() &&
                    f.contains("xxh3") && f.at("xxh3").is_string(),
                "\"files\": '{}' needs \"nbytes\" and \"xxh3\"", fname);
    auto h = parse_checksum_hex(f.at("xxh3").get<std::string>());
    MAGIX_CHECK(h.has_value(), "\"files\": '{}': \"xxh3\" must be 16 lowercase hex digits", fname);
    out.files[fname] = {f.at("nbytes").get<uint64_t>(), *h};
  }
  MAGIX_CHECK(index.contains("extra_files") && index.at("extra_files").is_array(),
              "no \"extra_files\" list");
  for (const json& f : index.at("extra_files")) {
    MAGIX_CHECK(f.is_string() && out.files.count(f.get<std::string>()),
                "\"extra_files\": {} is not in \"files\"", f.dump());
    out.extra_files.push_back(f.get<std::string>());
  }
  MAGIX_CHECK(index.contains("items") && index.at("items").is_object(), "no \"items\" object");
  for (const auto& [item, tensors] : index.at("items").items()) {
    check_item_name(item);
    MAGIX_CHECK(tensors.is_object(), "item \"{}\" is not an object", item);
    auto& tensors_out = out.items[item];
    for (const auto& [tname, t] : tensors.items()) {
      const std::string where = fmt::format("tensor {}/{}", item, tname);
      MAGIX_CHECK(t.is_object() && t.contains("dtype") && t.at("dtype").is_string() &&
                      t.contains("shards") && t.at("shards").is_array(),
                  "{}: needs \"dtype\", \"shape\" and \"shards\"", where);
      auto dt = dtype_from_name(t.at("dtype").get<std::string>());
      MAGIX_CHECK(dt.has_value(), "{}: unknown dtype {}", where, t.at("dtype").dump());
      IndexTensor e;
      e.dtype = *dt;
      // Reuse the shard-list parser: add the per-tensor fields to each shard.
      json shards = json::array();
      for (json s : t.at("shards")) {
        MAGIX_CHECK(s.is_object(), "{}: a shard is not an object", where);
        s["item"] = item;
        s["tensor"] = tname;
        s["dtype"] = t.at("dtype");
        MAGIX_CHECK(t.contains("shape"), "{}: no \"shape\"", where);
        s["shape"] = t.at("shape");
        shards.push_back(std::move(s));
      }
      try {
        e.shards = shard_list_from_json(shards);
      } catch (const Error& err) {
        MAGIX_FAIL("{}: {}", where, err.what());
      }
      MAGIX_CHECK(t.at("shape").is_array(), "{}: \"shape\" is not a list", where);
      for (const json& d : t.at("shape")) {
        MAGIX_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0,
                    "{}: \"shape\" must hold non-negative integers", where);
        e.shape.push_back(d.get<int64_t>());
      }
      for (const ShardRecord& s : e.shards) check_relative_path(s.file, where);
      check_tiling(e.shape, e.dtype, e.shards, where);
      tensors_out.emplace(tname, std::move(e));
    }
  }
  return out;
}

void check_relative_path(const std::string& file, const std::string& where) {
  fs::path p(file);
  bool ok = !file.empty() && p.is_relative() && file.find('\\') == std::string::npos;
  for (const fs::path& part : p) {
    ok = ok && !part.empty() && part != ".." && part != ".";
  }
  MAGIX_CHECK(ok, "{}: shard file '{}' is not a plain path inside the step directory", where, file);
}

void check_tiling(const Shape& global, DType dtype, const std::vector<ShardRecord>& shards,
                  const std::string& where) {
  const size_t nd = global.size();
  const int64_t numel = shape_numel(global);
  int64_t covered = 0;
  for (const ShardRecord& s : shards) {
    MAGIX_CHECK(s.start.size() == nd && s.extent.size() == nd,
                "{}: a shard box has {} / {} dims, the tensor has {}", where, s.start.size(),
                s.extent.size(), nd);
    for (size_t d = 0; d < nd; ++d) {
      // Written so that nothing overflows (the values come from a file): 0 <= start <= global
      // and extent <= global - start.
      MAGIX_CHECK(s.start[d] >= 0 && s.extent[d] >= 0 && s.start[d] <= global[d] &&
                      s.extent[d] <= global[d] - s.start[d],
                  "{}: shard box start {} extent {} lies outside the shape {}", where,
                  shape_str(s.start), shape_str(s.extent), shape_str(global));
    }
    const int64_t n = shape_numel(s.extent);
    uint64_t bytes = 0;
    MAGIX_CHECK(!__builtin_mul_overflow(static_cast<uint64_t>(n), dtype_size(dtype), &bytes) &&
                    s.nbytes == bytes,
                "{}: shard of {} elements of {} records {} bytes", where, n, dtype_name(dtype),
                s.nbytes);
    MAGIX_CHECK(!__builtin_add_overflow(covered, n, &covered),
                "{}: shards cover more than its {} elements", where, numel);
  }
  for (size_t a = 0; a < shards.size(); ++a) {
    for (size_t b = a + 1; b < shards.size(); ++b) {
      bool overlap = shape_numel(shards[a].extent) > 0 && shape_numel(shards[b].extent) > 0;
      for (size_t d = 0; d < nd && overlap; ++d) {
        const int64_t lo = std::max(shards[a].start[d], shards[b].start[d]);
        const int64_t hi = std::min(shards[a].start[d] + shards[a].extent[d],
                                    shards[b].start[d] + shards[b].extent[d]);
        overlap = lo < hi;
      }
      MAGIX_CHECK(!overlap, "{}: shards at {} and {} overlap", where, shape_str(shards[a].start),
                  shape_str(shards[b].start));
    }
  }
  MAGIX_CHECK(covered == numel, "{}: shards cover {} of its {} elements", where, covered, numel);
}

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  MAGIX_CHECK(in.good(), "cannot open {}", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  MAGIX_CHECK(!in.bad(), "cannot read {}", path.string());
  return ss.str();
}

void write_file_synced(const fs::path& path, const void* data, size_t n) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  MAGIX_CHECK(fd >= 0, "cannot create {}: {}", path.string(), std::strerror(errno));
  io::FileHandle handle(fd);
  io::write_all(fd, data, n, path);
  MAGIX_CHECK(::fsync(fd) == 0, "cannot fsync {}: {}", path.string(), std::strerror(errno));
}

}  // namespace magix::ckpt
