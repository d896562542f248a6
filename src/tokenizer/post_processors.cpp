#include "tokenizer/post_processors.hpp"

#include <algorithm>

#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "tokenizer/unicode.hpp"

namespace magix::text {
namespace {

using nlohmann::json;

class SequenceProcessor final : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> parts;
  void process(EncodingBuffer& enc, bool add, const IdToToken& f) const override {
    for (const auto& p : parts) p->process(enc, add, f);
  }
  void special_ids(std::vector<int32_t>& out) const override {
    for (const auto& p : parts) p->special_ids(out);
  }
};

// Single-sequence template: special tokens around the sequence "A".
class TemplateProcessor final : public PostProcessor {
 public:
  struct Item {
    bool is_sequence;
    std::vector<int32_t> ids;  // the special token's ids
  };
  std::vector<Item> single;
  void process(EncodingBuffer& enc, bool add, const IdToToken&) const override {
    if (!add) return;
    EncodingBuffer out;
    out.with_offsets = enc.with_offsets;
    for (const Item& it : single) {
      if (it.is_sequence) {
        out.ids.insert(out.ids.end(), enc.ids.begin(), enc.ids.end());
        out.offsets.insert(out.offsets.end(), enc.offsets.begin(), enc.offsets.end());
        out.from_input.insert(out.from_input.end(), enc.from_input.begin(), enc.from_input.end());
      } else {
        out.ids.insert(out.ids.end(), it.ids.begin(), it.ids.end());
        if (!out.with_offsets) continue;
        out.offsets.insert(out.offsets.end(), it.ids.size(), Range{0, 0});
        out.from_input.insert(out.from_input.end(), it.ids.size(), 0);
      }
    }
    enc = std::move(out);
  }
  void special_ids(std::vector<int32_t>& out) const override {
    for (const Item& it : single) out.insert(out.end(), it.ids.begin(), it.ids.end());
  }
};

// Adds no tokens; with trim_offsets, offsets drop leading/trailing spaces of their token.
class ByteLevelProcessor final : public PostProcessor {
 public:
  bool trim_offsets = true, add_prefix_space = true;
  void process(EncodingBuffer& enc, bool, const IdToToken& token_text) const override {
    if (!trim_offsets || !enc.with_offsets) return;
    const auto is_space = [](char32_t c) {
      return c == 0x120 || is_whitespace(c);
    };  // 'Ġ' is byte ' '
    for (size_t i = 0; i < enc.ids.size(); ++i) {
      const std::string t = token_text(i);
      std::vector<char32_t> cps;
      for (size_t p = 0; p < t.size();) {
        const Utf8Step st = utf8_step(t, p);
        cps.push_back(st.valid ? st.cp : 0xFFFD);
        p += st.len;
      }
      size_t lead = 0, trail = 0;
      while (lead < cps.size() && is_space(cps[lead])) ++lead;
      while (trail < cps.size() && is_space(cps[cps.size() - 1 - trail])) ++trail;
      auto& [b, e] = enc.offsets[i];
      if (lead > 0) {
        const bool first = i == 0 || b == 0;
        if (first && add_prefix_space && lead == 1) lead = 0;
        b = std::min(b + lead, e);
      }
      if (trail > 0 && e >= trail) e = std::max(e - trail, b);
    }
  }
};

// [CLS] A [SEP]
class BertProcessor final : public PostProcessor {
 public:
  int32_t cls = 0, sep = 0;
  void process(EncodingBuffer& enc, bool add, const IdToToken&) const override {
    if (!add) return;
    enc.ids.insert(enc.ids.begin(), cls);
    enc.ids.push_back(sep);
    if (!enc.with_offsets) return;
    enc.offsets.insert(enc.offsets.begin(), Range{0, 0});
    enc.from_input.insert(enc.from_input.begin(), 0);
    enc.offsets.push_back({0, 0});
    enc.from_input.push_back(0);
  }
  void special_ids(std::vector<int32_t>& out) const override {
    out.push_back(cls);
    out.push_back(sep);
  }
};

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& source) {
  if (j.is_null()) return nullptr;
  MAGIX_CHECK(j.is_object() && j.contains("type"),
              "{}: post_processor must be an object with a 'type'", source);
  const std::string type = json_get<std::string>(j, "type", source + ": post_processor");
  const std::string ctx = source + ": post_processor " + type;
  if (type == "Sequence") {
    auto p = std::make_unique<SequenceProcessor>();
    const nlohmann::json& parts = json_array_at(j, "processors", ctx);
    for (size_t i = 0; i < parts.size(); ++i) {
      // each part an object: a null one would be a missing stage (HF tokenizers refuses it too)
      json_expect_object(parts[i], fmt::format("{}[{}]", json_key_name(ctx, "processors"), i));
      p->parts.push_back(make_post_processor(parts[i], source));
    }
    return p;
  }
  if (type == "TemplateProcessing") {
    auto p = std::make_unique<TemplateProcessor>();
    const json specials = json_value<json>(j, "special_tokens", json::object(), ctx);
    json_expect_object(specials, json_key_name(ctx, "special_tokens"));
    const json& single = json_array_at(j, "single", ctx);
    for (size_t i = 0; i < single.size(); ++i) {
      const json& item = single[i];
      const std::string item_where = fmt::format("{}[{}]", json_key_name(ctx, "single"), i);
      json_expect_object(item, item_where);
      if (item.contains("Sequence")) {
        const json& seq = json_object_at(item, "Sequence", item_where);
        MAGIX_CHECK(json_value<std::string>(seq, "id", "A", item_where + ": Sequence") == "A",
                    "{}: TemplateProcessing single template may only use sequence A", source);
        p->single.push_back({true, {}});
      } else if (item.contains("SpecialToken")) {
        const json& special = json_object_at(item, "SpecialToken", item_where);
        const std::string name =
            json_get<std::string>(special, "id", item_where + ": SpecialToken");
        MAGIX_CHECK(specials.contains(name),
                    "{}: TemplateProcessing uses special token '{}' that is not in "
                    "its special_tokens",
                    source, name);
        const std::string special_where = json_key_name(ctx, "special_tokens") + ": " + name;
        p->single.push_back({false, json_get<std::vector<int32_t>>(
                                        json_expect_object(specials.at(name), special_where), "ids",
                                        special_where)});
      } else {
        MAGIX_FAIL("{}: TemplateProcessing item {} is neither Sequence nor SpecialToken", source,
                   item.dump());
      }
    }
    return p;
  }
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelProcessor>();
    p->trim_offsets = json_value<bool>(j, "trim_offsets", true, ctx);
    p->add_prefix_space = json_value<bool>(j, "add_prefix_space", true, ctx);
    return p;
  }
  if (type == "BertProcessing") {
    auto p = std::make_unique<BertProcessor>();
    // cls and sep are [token, id] pairs.
    const auto id_of = [&](const char* key) {
      const json& pair = json_array_at(j, key, ctx);
      MAGIX_CHECK(pair.size() == 2, "{}: \"{}\" must be a [token, id] pair", ctx, key);
      return json_as<int32_t>(pair[1], json_key_name(ctx, key) + "[1]");
    };
    p->cls = id_of("cls");
    p->sep = id_of("sep");
    return p;
  }
  MAGIX_FAIL(
      "{}: unsupported post_processor type '{}' (supported: Sequence, TemplateProcessing, "
      "ByteLevel, BertProcessing)",
      source, type);
}

}  // namespace magix::text
