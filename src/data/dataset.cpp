// Records -> token examples: rendering, tokenisation, truncation, assistant-only loss masks.
#include "magix/dataset.hpp"

#include <algorithm>

#include "magix/chat_template.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

// A sentinel content that no template transforms (no surrounding whitespace, no markup) and no
// real conversation contains; it locates where a message's content lands in the rendering.
constexpr std::string_view kSentinel = "MAGIX_SENTINEL_7f3a9c0e51b2";

bool has_own_template(const Tokenizer& tokenizer, const std::optional<std::string>& name) {
  return tokenizer.config().chat_template(name).has_value();
}

std::string render(const TokenizerConfig& config, const nlohmann::ordered_json& messages,
                   bool add_generation_prompt, const std::optional<std::string>& name,
                   const nlohmann::ordered_json& extra) {
  return apply_chat_template(config, messages, add_generation_prompt, extra, name);
}

nlohmann::ordered_json head(const nlohmann::ordered_json& messages, size_t n) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (size_t i = 0; i < n; ++i) out.push_back(messages[i]);
  return out;
}

bool starts_with_at(const std::string& s, size_t at, std::string_view p) {
  return at <= s.size() && s.size() - at >= p.size() && s.compare(at, p.size(), p) == 0;
}

std::string_view rtrim(std::string_view s) {
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\n' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// Cuts `ids` (and `mask`) to `limit` tokens as transformers' truncation does: the content is
// cut from the right, the tokens the post-processor added (and the appended eos) are kept.
// `content` = the encoding of the same text without special tokens, which `ids` contains as a
// contiguous run.
void truncate_keeping_specials(std::vector<int32_t>& ids, std::vector<uint8_t>& mask,
                               const std::vector<int32_t>& content, size_t limit) {
  const size_t n = content.size();
  const size_t extra = ids.size() - std::min(ids.size(), n);
  size_t lead = ids.size();  // position of the content run inside ids
  if (ids.size() >= n) {
    for (size_t p = 0; p <= extra; ++p) {
      if (std::equal(content.begin(), content.end(), ids.begin() + p)) {
        lead = p;
        break;
      }
    }
  }
  if (lead == ids.size() || extra >= limit) {  // no such structure: plain cut
    ids.resize(limit);
    mask.resize(limit);
    return;
  }
  const size_t keep = limit - extra;  // content tokens kept
  ids.erase(ids.begin() + lead + keep, ids.begin() + lead + n);
  mask.erase(mask.begin() + lead + keep, mask.begin() + lead + n);
}

}  // namespace

TrainOn parse_train_on(std::string_view name) {
  if (name == "all") return TrainOn::kAll;
  if (name == "assistant") return TrainOn::kAssistant;
  MAGIX_FAIL("train_on '{}' is not supported (all | assistant)", name);
}

int32_t training_pad_id(const Tokenizer& tokenizer) {
  if (auto pad = tokenizer.pad_id()) return *pad;
  if (auto eos = tokenizer.eos_id()) return *eos;
  MAGIX_FAIL(
      "the tokenizer has neither a pad nor an eos token: cannot pad training rows "
      "(set pad_token or eos_token in tokenizer_config.json)");
}

std::string render_record(const Record& record, const Tokenizer& tokenizer,
                          const EncodeOptions& options) {
  if (!options.use_chat_template) {
    MAGIX_CHECK(!record.is_messages,
                "the field holds a list of messages: pass --use_chat_template to render "
                "conversations (or choose a text field with --train_data_field)");
    return record.text;
  }
  MAGIX_CHECK(record.is_messages,
              "use_chat_template needs a list of messages ({{role, content}}), but the field "
              "holds a string");
  check_chat_template(tokenizer, options.chat_template_name);
  return render(tokenizer.config(), record.messages, false, options.chat_template_name,
                options.template_extra);
}

std::vector<std::pair<size_t, size_t>> assistant_spans(const TokenizerConfig& config,
                                                       const nlohmann::ordered_json& messages,
                                                       const std::string& rendered,
                                                       const std::optional<std::string>& name,
                                                       const nlohmann::ordered_json& extra) {
  std::vector<std::pair<size_t, size_t>> spans;
  size_t previous_end = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].at("role") != "assistant") continue;
    // The role header: what add_generation_prompt appends after messages[:i] (templates cannot
    // render an empty conversation: for i = 0, after a stand-in user message).
    nlohmann::ordered_json prefix = head(messages, i);
    if (prefix.empty()) prefix.push_back({{"role", "user"}, {"content", "x"}});
    const std::string before = render(config, prefix, false, name, extra);
    const std::string with_prompt = render(config, prefix, true, name, extra);
    MAGIX_CHECK(
        with_prompt.size() > before.size() && with_prompt.compare(0, before.size(), before) == 0,
        "train_on assistant: the chat template adds no generation prompt after message {}, "
        "so the assistant's role header cannot be told from its content",
        i);
    const std::string header = with_prompt.substr(before.size());

    // Where the content ends: render with this content replaced by the sentinel; the text after
    // it is the same as the text after the real content in `rendered`.
    nlohmann::ordered_json marked = messages;
    marked[i]["content"] = std::string(kSentinel);
    const std::string rendered_marked = render(config, marked, false, name, extra);
    const size_t at = rendered_marked.find(kSentinel);
    MAGIX_CHECK(
        at != std::string::npos && rendered_marked.find(kSentinel, at + 1) == std::string::npos,
        "train_on assistant: the chat template does not write the content of message {} "
        "exactly once",
        i);
    const size_t tail = rendered_marked.size() - at - kSentinel.size();
    MAGIX_CHECK(
        tail <= rendered.size() && rendered.compare(rendered.size() - tail, tail, rendered_marked,
                                                    at + kSentinel.size(), tail) == 0,
        "train_on assistant: the text the chat template writes after message {} depends "
        "on its content",
        i);
    const size_t content_end = rendered.size() - tail;

    // Where the content starts: right after the last header before the sentinel, the rendering
    // being the same up to there.
    const size_t header_at =
        at >= header.size() ? rendered_marked.rfind(header, at - header.size()) : std::string::npos;
    MAGIX_CHECK(header_at != std::string::npos,
                "train_on assistant: the assistant header '{}' of message {} is not in the "
                "rendered conversation",
                header, i);
    const size_t begin = header_at + header.size();
    MAGIX_CHECK(begin <= content_end && begin >= previous_end &&
                    rendered.compare(0, begin, rendered_marked, 0, begin) == 0,
                "train_on assistant: cannot match message {} between the renderings of the "
                "conversation",
                i);

    // The end-of-turn text: what the template writes after the content when the message is
    // the last one, trailing whitespace excluded; it must follow the content here too.
    nlohmann::ordered_json last = head(marked, i + 1);
    const std::string rendered_last = render(config, last, false, name, extra);
    const size_t last_at = rendered_last.rfind(kSentinel);
    MAGIX_CHECK(last_at != std::string::npos,
                "train_on assistant: the chat template drops the content of message {} when it "
                "is the last one",
                i);
    const std::string_view end_of_turn =
        rtrim(std::string_view(rendered_last).substr(last_at + kSentinel.size()));
    MAGIX_CHECK(starts_with_at(rendered, content_end, end_of_turn),
                "train_on assistant: message {} is not followed by the end-of-turn text '{}' in "
                "the rendered conversation",
                i, end_of_turn);
    const size_t end = content_end + end_of_turn.size();
    spans.emplace_back(begin, end);
    previous_end = end;
  }
  return spans;
}

namespace {

// Whether the post-processor itself ends an encoding with eos (then add_eos_token adds none).
bool post_processor_appends_eos(const Tokenizer& tokenizer, int32_t eos) {
  const std::vector<int32_t> with = tokenizer.encode("a", true);
  const std::vector<int32_t> without = tokenizer.encode("a", false);
  return with.size() > without.size() && !with.empty() && with.back() == eos &&
         (without.empty() || without.back() != eos);
}

// What encoding did to one example (load_examples' statistics).
struct EncodeInfo {
  bool truncated = false;
  int64_t full_length = 0;     // tokens before truncation
  int64_t targets_before = 0;  // counted targets before truncation
};

int64_t counted_targets(const std::vector<uint8_t>& mask) {
  int64_t n = 0;
  for (size_t t = 1; t < mask.size(); ++t) n += mask[t] ? 1 : 0;
  return n;
}

Example encode_record_impl(const Record& record, const Tokenizer& tokenizer,
                           const EncodeOptions& options, EncodeInfo* info) {
  MAGIX_CHECK(options.max_length >= 1, "max_length {} must be >= 1", options.max_length);
  MAGIX_CHECK(options.train_on == TrainOn::kAll || options.use_chat_template,
              "train_on assistant needs conversations: pass --use_chat_template with a messages "
              "field");
  const std::string text = render_record(record, tokenizer, options);
  const bool own_template =
      options.use_chat_template && has_own_template(tokenizer, options.chat_template_name);
  // The tokenizer's own template writes its special tokens; plain text and the built-in format
  // get the post-processor's (bos), as in the reference.
  const bool add_special = !own_template;

  Example ex;
  if (options.train_on == TrainOn::kAssistant) {
    Tokenizer::Encoding enc = tokenizer.encode_with_offsets(text, add_special);
    MAGIX_CHECK(enc.offsets.size() == enc.ids.size(), "tokenizer returned {} offsets for {} ids",
                enc.offsets.size(), enc.ids.size());
    // A token counts when its bytes overlap an assistant span; post-processor tokens ({0, 0})
    // never do.
    const auto spans = assistant_spans(tokenizer.config(), record.messages, text,
                                       options.chat_template_name, options.template_extra);
    ex.loss_mask.assign(enc.ids.size(), 0);
    for (size_t t = 0; t < enc.ids.size(); ++t) {
      const auto [b, e] = enc.offsets[t];
      for (const auto& [sb, se] : spans) {
        if (b < e && b < se && sb < e) {
          ex.loss_mask[t] = 1;
          break;
        }
      }
    }
    ex.ids = std::move(enc.ids);
  } else {
    ex.ids = tokenizer.encode(text, add_special);
    ex.loss_mask.assign(ex.ids.size(), 1);
  }

  if (!options.use_chat_template) {
    // The reference's add_eos_token: eos after every text example.
    const std::optional<int32_t> eos = tokenizer.eos_id();
    MAGIX_CHECK(eos.has_value(),
                "the tokenizer has no eos token to append to text examples (set eos_token in "
                "tokenizer_config.json)");
    if (!post_processor_appends_eos(tokenizer, *eos)) {
      ex.ids.push_back(*eos);
      ex.loss_mask.push_back(1);
    }
  }

  const auto limit = static_cast<size_t>(options.max_length + 1);
  if (info) {
    info->truncated = ex.ids.size() > limit;
    info->full_length = std::ssize(ex.ids);
    info->targets_before = counted_targets(ex.loss_mask);
  }
  if (ex.ids.size() > limit) {
    if (add_special) {
      truncate_keeping_specials(ex.ids, ex.loss_mask, tokenizer.encode(text, false), limit);
    } else {
      ex.ids.resize(limit);
      ex.loss_mask.resize(limit);
    }
  }
  return ex;
}

}  // namespace

void check_chat_template(const Tokenizer& tokenizer,
                         const std::optional<std::string>& template_name) {
  if (template_name == kBuiltinChatFormat) return;
  MAGIX_CHECK(has_own_template(tokenizer, template_name),
              "--use_chat_template: the tokenizer has no chat template (no chat_template in its "
              "tokenizer_config.json, no chat_template.jinja); pass --chat_template_name {} for "
              "the reference scripts' built-in format (<|role|>\\n{{content}}{{eos}} per turn), "
              "or a tokenizer that has a template",
              kBuiltinChatFormat);
}

Example encode_record(const Record& record, const Tokenizer& tokenizer,
                      const EncodeOptions& options) {
  return encode_record_impl(record, tokenizer, options, nullptr);
}

std::vector<Example> load_examples(const DatasetOptions& options, const Tokenizer& tokenizer,
                                   DatasetStats* stats) {
  DatasetStats local;
  DatasetStats& st = stats ? *stats : local;
  MAGIX_CHECK(options.encode.train_on == TrainOn::kAll || options.encode.use_chat_template,
              "train_on assistant needs conversations: pass --use_chat_template with a messages "
              "field");
  if (options.encode.use_chat_template) {
    // The templates are parsed before any record is read: a syntax error (or no template at
    // all) names the tokenizer's file, not a data line.
    check_chat_template(tokenizer, options.encode.chat_template_name);
    ChatFormatter(tokenizer.config(), options.encode.chat_template_name);
  }
  ReadOptions read;
  read.field = options.data_field;
  read.config = options.data_config;
  read.split = options.split;
  read.skip_bad_records = options.skip_bad_records;
  // Records stream from the source; only the token examples are kept.
  std::unique_ptr<RecordReader> reader = open_records(options.path, read, &st.read);
  const std::string source = options.path.string();

  std::vector<Example> examples;
  std::vector<int64_t> lengths;  // tokens of each example before truncation
  Record record;
  while (reader->next(record)) {
    Example ex;
    try {
      EncodeInfo info;
      ex = encode_record_impl(record, tokenizer, options.encode, &info);
      st.truncated += info.truncated ? 1 : 0;
      const int64_t kept = counted_targets(ex.loss_mask);
      st.targets_before_truncation += info.targets_before;
      st.targets += kept;
      st.examples_losing_targets += kept < info.targets_before ? 1 : 0;
      lengths.push_back(info.full_length);
    } catch (const Error& e) {
      std::string message = fmt::format("{}: {}", reader->where(record), e.what());
      if (!options.skip_bad_records) {
        MAGIX_FAIL(
            "{} (fix the record, or pass --skip_bad_records to skip and count such "
            "records)",
            message);
      }
      st.skipped_encode += 1;
      if (st.skipped_errors.size() < ReadStats::kMaxReported) st.skipped_errors.push_back(message);
      continue;
    }
    bool any_target = false;
    for (size_t t = 1; t < ex.loss_mask.size(); ++t) any_target = any_target || ex.loss_mask[t];
    st.without_targets += any_target ? 0 : 1;
    st.tokens += static_cast<int64_t>(ex.ids.size());
    examples.push_back(std::move(ex));
  }
  st.examples = static_cast<int64_t>(examples.size());
  if (!lengths.empty()) {
    // The 99th percentile of the lengths (nearest rank): max_length + 1 tokens fit in a row.
    const size_t k = (lengths.size() * 99 + 99) / 100 - 1;
    std::nth_element(lengths.begin(), lengths.begin() + static_cast<std::ptrdiff_t>(k),
                     lengths.end());
    st.max_length_p99 = std::max<int64_t>(1, lengths[k] - 1);
  }
  MAGIX_CHECK(!examples.empty(), "{}: no examples ({} records read, {} skipped)", source,
              st.read.records, st.skipped());
  return examples;
}

std::string render_prompt(const Tokenizer& tokenizer, const std::string& prompt,
                          bool use_chat_template, const std::optional<std::string>& template_name,
                          const nlohmann::ordered_json& extra) {
  if (!use_chat_template) return prompt;
  check_chat_template(tokenizer, template_name);
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  messages.push_back({{"role", "user"}, {"content", prompt}});
  return render(tokenizer.config(), messages, true, template_name, extra);
}

std::vector<int32_t> encode_prompt(const Tokenizer& tokenizer, const std::string& prompt,
                                   bool use_chat_template,
                                   const std::optional<std::string>& template_name,
                                   const nlohmann::ordered_json& extra) {
  const std::string text =
      render_prompt(tokenizer, prompt, use_chat_template, template_name, extra);
  const bool own_template = use_chat_template && has_own_template(tokenizer, template_name);
  return tokenizer.encode(text, !own_template);
}

}  // namespace magix
