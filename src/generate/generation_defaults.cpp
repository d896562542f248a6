// apply_generation_config: a model's generation_config.json as generate's defaults; explicit
// flags win (docs/generation.md).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "magix/generate.hpp"

namespace magix {

std::vector<std::string> apply_generation_config(const GenerationConfig& g,
                                                 const std::vector<std::string>& given,
                                                 GenerateOptions& o) {
  const auto is_given = [&](const char* flag) {
    return std::find(given.begin(), given.end(), flag) != given.end();
  };
  std::vector<std::string> taken;
  const auto take = [&](const char* flag, const char* key, const auto& value, auto& target) {
    if (!value || is_given(flag)) return;
    target = static_cast<std::decay_t<decltype(target)>>(*value);
    taken.push_back(fmt::format("{} {}", key, *value));
  };
  SamplingOptions& s = o.sampling;
  take("sample", "do_sample", g.do_sample, s.sample);
  take("temperature", "temperature", g.temperature, s.temperature);
  take("top_k", "top_k", g.top_k, s.top_k);
  take("top_p", "top_p", g.top_p, s.top_p);
  take("repetition_penalty", "repetition_penalty", g.repetition_penalty, s.repetition_penalty);
  take("max_new_tokens", "max_new_tokens", g.max_new_tokens, o.max_new_tokens);
  // transformers: max_new_tokens, when set, overrides max_length.
  if (!is_given("max_new_tokens") && !g.max_new_tokens) {
    take("max_length", "max_length", g.max_length, o.max_length);
  }
  if (!g.eos_token_ids.empty()) {
    o.eos_ids = g.eos_token_ids;
    taken.push_back(fmt::format("eos_token_id [{}]", fmt::join(g.eos_token_ids, ", ")));
  }
  if (g.pad_token_id) {
    o.pad_id = *g.pad_token_id;
    taken.push_back(fmt::format("pad_token_id {}", *g.pad_token_id));
  }
  return taken;
}

}  // namespace magix
