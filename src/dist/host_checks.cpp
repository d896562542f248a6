// check_shared_folder and check_same_file: a run over several hosts fails before its first step,
// naming the hosts, when they do not see the same checkpoint folder or the same data.
#include "magix/host_checks.hpp"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "magix/distributed.hpp"
#include "magix/error.hpp"

namespace magix {

namespace fs = std::filesystem;

namespace {

// Longest text one rank contributes to all_gather_text (a host name and a short reason).
constexpr size_t kMaxText = 384;

// Every rank's `text` (cut to kMaxText bytes), in world rank order. One all_reduce: each rank
// writes its bytes, as doubles, into its own slot of a zeroed buffer. Only on the error path.
std::vector<std::string> all_gather_text(Communicator& world, const std::string& text) {
  const size_t n = static_cast<size_t>(world.size());
  std::vector<double> buf(n * kMaxText, 0.0);
  const size_t len = std::min(text.size(), kMaxText);
  double* slot = buf.data() + static_cast<size_t>(world.rank()) * kMaxText;
  for (size_t i = 0; i < len; ++i) slot[i] = static_cast<unsigned char>(text[i]);
  world.all_reduce(buf, ReduceOp::kSum);
  std::vector<std::string> out(n);
  for (size_t r = 0; r < n; ++r) {
    for (size_t i = 0; i < kMaxText; ++i) {
      const double c = buf[r * kMaxText + i];
      if (c == 0.0) break;
      out[r].push_back(static_cast<char>(static_cast<unsigned char>(c)));
    }
  }
  return out;
}

// 1.0 in world rank r's slot when that rank's `bad` is true.
std::vector<double> gather_flags(Communicator& world, bool bad) {
  std::vector<double> flags(static_cast<size_t>(world.size()), 0.0);
  flags[static_cast<size_t>(world.rank())] = bad ? 1.0 : 0.0;
  world.all_reduce(flags, ReduceOp::kMax);
  return flags;
}

std::string join_ranks(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

// What every rank says about itself: its host and a note. Collective.
struct RankNote {
  std::string host, note;
};
std::vector<RankNote> gather_notes(Communicator& world, const std::string& note) {
  std::vector<RankNote> out;
  for (const std::string& t : all_gather_text(world, processor_name() + "\t" + note)) {
    const size_t tab = t.find('\t');
    out.push_back(tab == std::string::npos ? RankNote{t, ""}
                                           : RankNote{t.substr(0, tab), t.substr(tab + 1)});
  }
  return out;
}

// One line "host H (ranks ...): note" per distinct (host, note) among the ranks `pick` accepts,
// in rank order of first appearance.
template <class Pick>
std::string group_lines(const std::vector<RankNote>& notes, Pick pick) {
  std::vector<std::pair<RankNote, std::vector<int>>> groups;
  for (size_t r = 0; r < notes.size(); ++r) {
    if (!pick(r)) continue;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) {
      return g.first.host == notes[r].host && g.first.note == notes[r].note;
    });
    if (it == groups.end()) it = groups.insert(groups.end(), {notes[r], {}});
    it->second.push_back(static_cast<int>(r));
  }
  std::string out;
  for (const auto& [n, ranks] : groups) {
    out += fmt::format("\n  host {} ({}): {}", n.host, join_ranks(ranks), n.note);
  }
  return out;
}

bool any_set(const std::vector<double>& flags) {
  return std::any_of(flags.begin(), flags.end(), [](double f) { return f != 0.0; });
}

// Reads the whole (small) file, or nullopt when it cannot be opened.
std::optional<std::string> read_small_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string s(256, '\0');
  in.read(s.data(), static_cast<std::streamsize>(s.size()));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

// Rank 0's probe, broadcast to every rank: the token names the file and is its contents.
struct Probe {
  uint64_t token = 0;
  char error[256] = {};  // rank 0's failure to write it, empty when written
};

std::string probe_name(uint64_t token) {
  return fmt::format(".magix-shared-probe-{:016x}", token);
}

// World rank 0 only: writes the probe file; returns the error text, empty on success.
std::string write_probe(const fs::path& dir, uint64_t token) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fmt::format("cannot create the folder: {}", ec.message());
  const fs::path path = dir / probe_name(token);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << fmt::format("{:016x}", token);
  out.close();
  if (!out) return fmt::format("cannot write {}", path.string());
  return {};
}

struct Fingerprint {
  uint64_t size = 0;
  uint64_t hash = 0;
  bool readable = false;
};

constexpr uint64_t kEnd = uint64_t{1} << 20;  // the bytes hashed at each end of a large file

Fingerprint fingerprint(const fs::path& path, std::string* error) {
  Fingerprint f;
  std::error_code ec;
  f.size = fs::file_size(path, ec);
  if (ec) {
    *error = fmt::format("cannot read it: {}", ec.message());
    return {};
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot open it";
    return {};
  }
  // (first MiB, last MiB), or the whole file when the two would overlap.
  std::vector<char> bytes;
  auto append = [&](uint64_t offset, uint64_t n) {
    const size_t at = bytes.size();
    bytes.resize(at + n);
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(bytes.data() + at, static_cast<std::streamsize>(n));
    return static_cast<uint64_t>(in.gcount()) == n;
  };
  const bool ok =
      f.size <= 2 * kEnd ? append(0, f.size) : append(0, kEnd) && append(f.size - kEnd, kEnd);
  if (!ok) {
    *error = "cannot read it (shorter than its size)";
    return {};
  }
  f.hash = XXH3_64bits(bytes.data(), bytes.size());
  f.readable = true;
  return f;
}

}  // namespace

void check_shared_folder(const Mesh& mesh, const std::string& dir, const std::string& flag) {
  Communicator& world = mesh.world();
  if (world.size() <= 1) return;
  const bool rank0 = world.rank() == 0;
  Probe probe;
  bool created = false;
  if (rank0) {
    std::random_device rd;
    probe.token = (static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd());
    std::error_code ec;
    created = !fs::exists(dir, ec) && !ec;
    const std::string error = write_probe(dir, probe.token);
    if (!error.empty()) {
      std::snprintf(probe.error, sizeof probe.error, "host %s: %s", processor_name().c_str(),
                    error.c_str());
    }
  }
  // The broadcast leaves rank 0 after its write: every read below comes after it.
  world.broadcast(std::as_writable_bytes(std::span(&probe, 1)), 0);
  MAGIX_CHECK(probe.error[0] == '\0', "{} '{}': rank 0 could not write a probe file there ({})",
              flag, dir, probe.error);

  // A network file system may show a fresh file a moment late: look a few times before failing.
  const fs::path path = fs::path(dir) / probe_name(probe.token);
  const std::string want = fmt::format("{:016x}", probe.token);
  std::optional<std::string> seen;
  for (int attempt = 0; attempt < 10; ++attempt) {
    seen = read_small_file(path);
    if (seen == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const bool bad = seen != want;
  const std::vector<double> flags = gather_flags(world, bad);  // every rank has read
  if (rank0) {
    std::error_code ec;
    fs::remove(path, ec);
  }
  if (!any_set(flags)) return;
  const std::vector<RankNote> notes = gather_notes(
      world, !seen ? "does not see it" : "sees a file of that name with other contents");
  if (rank0 && created) {
    std::error_code ec;
    fs::remove(dir, ec);  // only when still empty
  }
  MAGIX_FAIL(
      "{} '{}' is not one folder shared by every host: rank 0 (host {}) wrote the probe file {} "
      "there, but{}\ncheckpoints need storage that all hosts share: the same network file system "
      "mounted at the same path on every host",
      flag, dir, notes[0].host, probe_name(probe.token),
      group_lines(notes, [&](size_t r) { return flags[r] != 0.0; }));
}

void check_same_file(const Mesh& mesh, const std::string& path, const std::string& flag) {
  Communicator& world = mesh.world();
  if (world.size() <= 1) return;
  // Sources that are not one file on world rank 0 (a folder, a glob, a comma-separated list, a
  // hub dataset name: docs/data.md) are not fingerprinted; every rank decides as rank 0 does.
  std::error_code ec;
  uint8_t one_file = fs::is_regular_file(path, ec) ? 1 : 0;
  world.broadcast(std::as_writable_bytes(std::span(&one_file, 1)), 0);
  if (!one_file) return;
  std::string error;
  const Fingerprint mine = fingerprint(path, &error);
  Fingerprint first = mine;  // world rank 0's, after the broadcast
  world.broadcast(std::as_writable_bytes(std::span(&first, 1)), 0);
  const bool bad =
      !mine.readable || !first.readable || mine.size != first.size || mine.hash != first.hash;
  const std::vector<double> flags = gather_flags(world, bad);
  if (!any_set(flags)) return;
  const std::string note =
      !mine.readable ? error
      : mine.size <= 2 * kEnd
          ? fmt::format("{} bytes, XXH3 {:016x}", mine.size, mine.hash)
          : fmt::format("{} bytes, XXH3 of the first and last MiB {:016x}", mine.size, mine.hash);
  const std::vector<RankNote> notes = gather_notes(world, note);
  // Every host's view, rank 0's first: which file is "right" is for the user to say.
  MAGIX_FAIL(
      "{} '{}' is not the same file on every host:{}\nevery host must read identical data: copy "
      "the same file to each host, or keep it on storage all hosts share",
      flag, path, group_lines(notes, [](size_t) { return true; }));
}

}  // namespace magix
