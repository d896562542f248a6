// Encode throughput of magix::Tokenizer, one thread: MB of UTF-8 input per second, each corpus
// text encoded on its own (as tools/reference/bench_tokenizer.py does with HF tokenizers).
//
//   bench_tokenizer TOKENIZER [CORPUS.jsonl] [--repeat 100] [--rounds 5]
//
// TOKENIZER: a folder with tokenizer.json or a tokenizer.json file. CORPUS: JSONL with a "text"
// field (default: tests/fixtures/tokenizers/llama3.jsonl), repeated --repeat times. Prints the
// median over rounds, also the CPU-time rate (less disturbed by other processes). The last line is
// one JSON object with every figure.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "magix/error.hpp"
#include "magix/tokenizer.hpp"

namespace {

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  int repeat = 100, rounds = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--repeat" && i + 1 < argc)
      repeat = std::stoi(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc)
      rounds = std::stoi(argv[++i]);
    else
      pos.push_back(a);
  }
  if (pos.empty()) {
    std::fprintf(stderr,
                 "usage: bench_tokenizer TOKENIZER [CORPUS.jsonl] [--repeat N] [--rounds N]\n");
    return 2;
  }
  try {
    std::string load_start;
    std::getline(std::ifstream("/proc/loadavg"), load_start);
    const auto t0 = std::chrono::steady_clock::now();
    const magix::Tokenizer tok = magix::Tokenizer::load(pos[0]);
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string corpus_path =
        pos.size() > 1 ? pos[1]
                       : std::string(MAGIX_SOURCE_DIR) + "/tests/fixtures/tokenizers/llama3.jsonl";
    std::ifstream in(corpus_path);
    MAGIX_CHECK(in, "cannot open {}", corpus_path);
    std::vector<std::string> texts;
    std::string line;
    while (std::getline(in, line))
      texts.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
    size_t bytes = 0;
    for (const auto& t : texts) bytes += t.size();
    bytes *= static_cast<size_t>(repeat);

    MAGIX_CHECK(repeat >= 1 && rounds >= 1, "--repeat and --rounds must be >= 1");
    std::vector<double> wall, cpu;
    size_t n_ids = 0;
    for (int r = 0; r < rounds; ++r) {
      n_ids = 0;
      const auto w0 = std::chrono::steady_clock::now();
      const double c0 = cpu_seconds();
      for (int k = 0; k < repeat; ++k) {
        for (const auto& t : texts) n_ids += tok.encode(t, false).size();
      }
      cpu.push_back(cpu_seconds() - c0);
      wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count());
    }
    const std::vector<double> wall_rounds = wall, cpu_rounds = cpu;
    std::sort(wall.begin(), wall.end());
    std::sort(cpu.begin(), cpu.end());
    const double mb = static_cast<double>(bytes) / 1e6;
    const double mbs_wall = mb / wall[wall.size() / 2], mbs_cpu = mb / cpu[cpu.size() / 2];
    const double ids_per_s = static_cast<double>(n_ids) / wall[wall.size() / 2];
    std::printf("magix tokenizer=%s corpus=%s texts=%zu x%d bytes=%zu ids=%zu load_s=%.2f\n",
                pos[0].c_str(), corpus_path.c_str(), texts.size(), repeat, bytes, n_ids, load_s);
    std::printf("encode: %.2f MB/s wall (median of %d), %.2f MB/s per CPU-second, %.0f ids/s\n",
                mbs_wall, rounds, mbs_cpu, ids_per_s);
    std::string load_end;
    std::getline(std::ifstream("/proc/loadavg"), load_end);
    const nlohmann::json out{{"bench", "tokenizer"},
                             {"threads", 1},
                             {"tokenizer", pos[0]},
                             {"corpus", corpus_path},
                             {"texts", texts.size()},
                             {"repeat", repeat},
                             {"rounds", rounds},
                             {"bytes", bytes},
                             {"ids", n_ids},
                             {"load_s", load_s},
                             {"encode_mb_per_s_wall", mbs_wall},
                             {"encode_mb_per_s_cpu", mbs_cpu},
                             {"ids_per_s", ids_per_s},
                             {"wall_s_per_round", wall_rounds},
                             {"cpu_s_per_round", cpu_rounds},
                             {"load_average_start", load_start},
                             {"load_average_end", load_end}};
    std::printf("%s\n", out.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
