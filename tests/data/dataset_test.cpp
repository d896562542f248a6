// Records -> token examples with the real tokenizers and templates in ../shared/tokenizers:
// text rows against HF `tokenizers`, assistant-only masks exact to the token.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "magix/chat_template.hpp"
#include "magix/data_loader.hpp"
#include "magix/dataset.hpp"
#include "magix/error.hpp"

namespace magix {
namespace {

const std::filesystem::path kDir = std::filesystem::path(MAGIX_FIXTURES_DIR) / "data";
const std::filesystem::path kTokenizers = std::filesystem::path(MAGIX_SHARED_DIR) / "tokenizers";

// The folder of a real tokenizer with its tokenizer.json decompressed (xz), or nullopt when
// ../shared/tokenizers/<name> or the xz command is absent. The folder is a cache shared by test
// processes (ctest runs each test in its own): files are written under a unique name and renamed
// into place, and the folder name carries the size of the .xz file.
std::optional<std::filesystem::path> tokenizer_dir(const std::string& name) {
  namespace fs = std::filesystem;
  const auto src = kTokenizers / name;
  if (!fs::exists(src / "tokenizer.json.xz")) return std::nullopt;
  const auto dir = fs::temp_directory_path() / "magix_test_tokenizers" /
                   (name + "-" + std::to_string(fs::file_size(src / "tokenizer.json.xz")));
  const std::string tmp_suffix = ".tmp" + std::to_string(::getpid());
  if (!fs::exists(dir / "tokenizer.json")) {
    fs::create_directories(dir);
    if (fs::exists(src / "tokenizer_config.json")) {
      fs::copy_file(src / "tokenizer_config.json", dir / ("tokenizer_config.json" + tmp_suffix),
                    fs::copy_options::overwrite_existing);
      fs::rename(dir / ("tokenizer_config.json" + tmp_suffix), dir / "tokenizer_config.json");
    }
    const auto tmp = dir / ("tokenizer.json" + tmp_suffix);
    const std::string cmd = "xz -dkc '" + (src / "tokenizer.json.xz").string() + "' > '" +
                            tmp.string() + "' 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) {
      fs::remove(tmp);
      return std::nullopt;
    }
    fs::rename(tmp, dir / "tokenizer.json");
  }
  return dir;
}

// A scratch folder for one test, removed when it goes out of scope.
struct ScratchDir {
  std::filesystem::path path;
  ScratchDir()
      : path(std::filesystem::temp_directory_path() /
             ("magix_test_data_" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

#define LOAD_TOKENIZER_OR_SKIP(var, name)                                             \
  const auto var##_dir = tokenizer_dir(name);                                         \
  if (!var##_dir) GTEST_SKIP() << "../shared/tokenizers/" << name << " or xz absent"; \
  const Tokenizer var = Tokenizer::load(var##_dir->string())

Record text_record(std::string text) {
  Record r;
  r.line = 1;
  r.text = std::move(text);
  return r;
}

Record chat_record(nlohmann::ordered_json messages) {
  Record r;
  r.line = 1;
  r.is_messages = true;
  r.messages = std::move(messages);
  return r;
}

// Runs of consecutive counted tokens (loss_mask = 1), each decoded with special tokens.
std::vector<std::string> counted_runs(const Tokenizer& tok, const Example& ex) {
  std::vector<std::string> runs;
  std::vector<int32_t> run;
  for (size_t i = 0; i <= ex.ids.size(); ++i) {
    if (i < ex.ids.size() && ex.loss_mask[i]) {
      run.push_back(ex.ids[i]);
    } else if (!run.empty()) {
      runs.push_back(tok.decode(run, /*skip_special_tokens=*/false));
      run.clear();
    }
  }
  return runs;
}

const nlohmann::ordered_json kConversation = nlohmann::ordered_json::parse(R"([
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": "What is 2+2?"},
  {"role": "assistant", "content": "It is 4."},
  {"role": "user", "content": "Name a color."},
  {"role": "assistant", "content": "Blue, like the sky."}
])");

// --- text examples: the reference's tokenisation, against HF tokenizers ----------------------

TEST(TextExamples, RowsMatchHfTokenizers) {
  std::ifstream in(kDir / "text_examples.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json fixture = nlohmann::json::parse(in);
  const int64_t max_length = fixture["max_length"].get<int64_t>();
  for (const auto& [name, expected] : fixture["tokenizers"].items()) {
    SCOPED_TRACE(name);
    const auto dir = tokenizer_dir(name);
    if (!dir) GTEST_SKIP() << "../shared/tokenizers/" << name << " or xz absent";
    const Tokenizer tok = Tokenizer::load(dir->string());
    EncodeOptions options;
    options.max_length = max_length;
    std::vector<Example> examples;
    for (const auto& text : fixture["texts"]) {
      examples.push_back(encode_record(text_record(text.get<std::string>()), tok, options));
    }
    const auto& rows = expected["rows"];
    ASSERT_EQ(examples.size(), rows.size());
    for (size_t r = 0; r < rows.size(); ++r) {
      // The example is the row's unpadded part.
      std::vector<int32_t> real;
      for (size_t t = 0; t < rows[r]["ids"].size(); ++t) {
        if (rows[r]["attention_mask"][t] == 1) real.push_back(rows[r]["ids"][t].get<int32_t>());
      }
      EXPECT_EQ(examples[r].ids, real) << "text " << r;
    }
    LoaderOptions lo;
    lo.global_batch = static_cast<int64_t>(rows.size());
    lo.max_length = max_length;
    lo.pad_id = expected["eos_id"].get<int32_t>();  // the reference's pad = eos
    lo.shuffle = false;
    DataLoader loader(examples, lo);
    const TokenBatch b = loader.next();
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto begin = static_cast<std::ptrdiff_t>(r * max_length);
      const std::vector<int32_t> inputs(b.input_ids.begin() + begin,
                                        b.input_ids.begin() + begin + max_length);
      const std::vector<int32_t> targets(b.targets.begin() + begin,
                                         b.targets.begin() + begin + max_length);
      EXPECT_EQ(inputs, rows[r]["input_ids"].get<std::vector<int32_t>>()) << "text " << r;
      EXPECT_EQ(targets, rows[r]["targets"].get<std::vector<int32_t>>()) << "text " << r;
    }
  }
}

TEST(TextExamples, LoadExamplesFromFileWithStats) {
  LOAD_TOKENIZER_OR_SKIP(tok, "mistral");
  DatasetOptions options;
  options.path = kDir / "text.txt";
  options.encode.max_length = 2;  // rows of 3 tokens: bos, one content token, eos
  DatasetStats stats;
  const auto examples = load_examples(options, tok, &stats);
  ASSERT_EQ(examples.size(), 4u);
  EXPECT_EQ(stats.examples, 4);
  EXPECT_EQ(stats.read.blank_lines, 1);
  for (const auto& ex : examples) {
    ASSERT_EQ(ex.ids.size(), 3u);  // "line one" etc. have two content tokens
    EXPECT_EQ(ex.ids.front(), 1);  // bos kept
    EXPECT_EQ(ex.ids.back(), 2);   // eos kept
  }
  EXPECT_EQ(stats.truncated, 4);
  EXPECT_EQ(stats.tokens, 12);
  EXPECT_EQ(training_pad_id(tok), 2);  // no pad token: eos
}

TEST(TextExamples, ConversationsNeedTheFlagAndViceVersa) {
  LOAD_TOKENIZER_OR_SKIP(tok, "mistral");
  EncodeOptions plain;
  EXPECT_THROW(encode_record(chat_record(kConversation), tok, plain), Error);
  EncodeOptions chat;
  chat.use_chat_template = true;
  EXPECT_THROW(encode_record(text_record("hi"), tok, chat), Error);
  EncodeOptions assistant_on_text;
  assistant_on_text.train_on = TrainOn::kAssistant;
  EXPECT_THROW(encode_record(text_record("hi"), tok, assistant_on_text), Error);
  EXPECT_EQ(parse_train_on("assistant"), TrainOn::kAssistant);
  EXPECT_EQ(parse_train_on("all"), TrainOn::kAll);
  EXPECT_THROW(parse_train_on("prompt"), Error);
}

// --- conversations -----------------------------------------------------------------------------

struct TemplateCase {
  const char* name;
  std::vector<std::string> expected_runs;  // decoded counted tokens, per assistant turn
  bool starts_with_bos_once;               // the template writes bos itself
};

TEST(AssistantMask, ExactToTheTokenOnRealTemplates) {
  const TemplateCase cases[] = {
      {"llama3_1", {"It is 4.<|eot_id|>", "Blue, like the sky.<|eot_id|>"}, true},
      {"gemma3", {"It is 4.<end_of_turn>", "Blue, like the sky.<end_of_turn>"}, true},
      // Qwen 3 writes an empty think block into the final assistant turn (not earlier ones).
      {"qwen3",
       {"It is 4.<|im_end|>", "<think>\n\n</think>\n\nBlue, like the sky.<|im_end|>"},
       false},
      // No template: the reference's built-in format, eos ending each turn.
      {"mistral", {"It is 4.</s>", "Blue, like the sky.</s>"}, false},
  };
  for (const TemplateCase& c : cases) {
    SCOPED_TRACE(c.name);
    const auto dir = tokenizer_dir(c.name);
    if (!dir) GTEST_SKIP() << "../shared/tokenizers/" << c.name << " or xz absent";
    const Tokenizer tok = Tokenizer::load(dir->string());
    EncodeOptions options;
    options.use_chat_template = true;
    options.train_on = TrainOn::kAssistant;
    options.max_length = 4096;
    if (!tok.config().chat_template()) {
      // No silent fallback: the built-in format is asked for by name.
      try {
        encode_record(chat_record(kConversation), tok, options);
        ADD_FAILURE() << "a tokenizer without a template must be refused";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("--chat_template_name builtin"), std::string::npos)
            << e.what();
      }
      options.chat_template_name = kBuiltinChatFormat;
    }
    const Example ex = encode_record(chat_record(kConversation), tok, options);
    EXPECT_EQ(counted_runs(tok, ex), c.expected_runs);

    // The whole conversation, as rendered, is what was tokenised.
    const std::string rendered = render_record(chat_record(kConversation), tok, options);
    const bool own = tok.config().chat_template().has_value();
    EXPECT_EQ(ex.ids, tok.encode(rendered, /*add_special_tokens=*/!own));
    if (c.starts_with_bos_once) {
      ASSERT_GE(ex.ids.size(), 2u);
      EXPECT_EQ(ex.ids[0], *tok.bos_id());
      EXPECT_NE(ex.ids[1], *tok.bos_id());
    }
    if (!own) {
      EXPECT_EQ(ex.ids[0], *tok.bos_id());  // built-in format: bos by the post-processor
    }

    // train_on all: every token counts.
    options.train_on = TrainOn::kAll;
    const Example all = encode_record(chat_record(kConversation), tok, options);
    EXPECT_EQ(all.ids, ex.ids);
    EXPECT_EQ(std::count(all.loss_mask.begin(), all.loss_mask.end(), 1),
              static_cast<std::ptrdiff_t>(all.ids.size()));

    // Through the loader: the counted targets are exactly the masked tokens.
    LoaderOptions lo;
    lo.global_batch = 1;
    lo.max_length = static_cast<int64_t>(ex.ids.size()) + 3;
    lo.pad_id = training_pad_id(tok);
    DataLoader loader({ex}, lo);
    const TokenBatch b = loader.next();
    std::vector<int32_t> counted, expected;
    for (int32_t t : b.targets) {
      if (t != TokenBatch::kIgnore) counted.push_back(t);
    }
    for (size_t i = 1; i < ex.ids.size(); ++i) {
      if (ex.loss_mask[i]) expected.push_back(ex.ids[i]);
    }
    EXPECT_EQ(counted, expected);
  }
}

TEST(AssistantMask, ContentTrimmedByTheTemplateAndThinking) {
  LOAD_TOKENIZER_OR_SKIP(llama, "llama3_1");
  EncodeOptions options;
  options.use_chat_template = true;
  options.train_on = TrainOn::kAssistant;
  // Llama 3 trims message content: the counted text is the trimmed content.
  auto padded = nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  Hello there.\n"}])");
  EXPECT_EQ(counted_runs(llama, encode_record(chat_record(padded), llama, options)),
            std::vector<std::string>{"Hello there.<|eot_id|>"});

  LOAD_TOKENIZER_OR_SKIP(qwen, "qwen3");
  // Qwen 3 moves reasoning into a think block of the final turn: it counts, the header does not.
  auto thinking = nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"}])");
  EXPECT_EQ(counted_runs(qwen, encode_record(chat_record(thinking), qwen, options)),
            std::vector<std::string>{"<think>\nadd them\n</think>\n\n4<|im_end|>"});
}

TEST(AssistantMask, TruncationCutsTheMask) {
  LOAD_TOKENIZER_OR_SKIP(tok, "gemma3");
  EncodeOptions options;
  options.use_chat_template = true;
  options.train_on = TrainOn::kAssistant;
  const Example full = encode_record(chat_record(kConversation), tok, options);
  options.max_length = static_cast<int64_t>(full.ids.size()) - 6;
  const Example cut = encode_record(chat_record(kConversation), tok, options);
  ASSERT_EQ(cut.ids.size(), full.ids.size() - 5);
  EXPECT_EQ(cut.ids, std::vector<int32_t>(full.ids.begin(), full.ids.end() - 5));
  EXPECT_EQ(cut.loss_mask, std::vector<uint8_t>(full.loss_mask.begin(), full.loss_mask.end() - 5));
}

TEST(AssistantMask, TemplateErrorsAreBadRecordsWithFileAndLine) {
  LOAD_TOKENIZER_OR_SKIP(tok, "gemma3");
  // Line 2 breaks Gemma's user/model alternation (the template raises an exception).
  const ScratchDir scratch;
  const auto path = scratch.path / "alternation.jsonl";
  {
    std::ofstream out(path);
    out << R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})"
        << "\n";
    out << R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})"
        << "\n";
    out << R"({"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]})"
        << "\n";
  }
  DatasetOptions options;
  options.path = path;
  options.data_field = "messages";
  options.encode.use_chat_template = true;
  options.encode.train_on = TrainOn::kAssistant;
  try {
    load_examples(options, tok);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string() + ":2: "), std::string::npos) << e.what();
  }
  options.skip_bad_records = true;
  DatasetStats stats;
  const auto examples = load_examples(options, tok, &stats);
  EXPECT_EQ(examples.size(), 2u);
  EXPECT_EQ(stats.skipped_encode, 1);
  EXPECT_EQ(stats.skipped(), 1);
  ASSERT_EQ(stats.skipped_errors.size(), 1u);
  EXPECT_EQ(counted_runs(tok, examples[1]), std::vector<std::string>{"d<end_of_turn>"});
}

TEST(AssistantMask, BuiltInFormatSpans) {
  // No tokenizer needed: the built-in format's spans, on the rendered text.
  TokenizerConfig config;
  config.eos_token = "</s>";
  const std::string rendered = apply_chat_template(config, kConversation, false);
  EXPECT_EQ(rendered,
            "<|system|>\nBe brief.</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\nIt is 4.</s>\n"
            "<|user|>\nName a color.</s>\n<|assistant|>\nBlue, like the sky.</s>");
  const auto spans = assistant_spans(config, kConversation, rendered);
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(rendered.substr(spans[0].first, spans[0].second - spans[0].first), "It is 4.</s>");
  EXPECT_EQ(rendered.substr(spans[1].first, spans[1].second - spans[1].first),
            "Blue, like the sky.</s>");
  // An assistant message first.
  auto first = nlohmann::ordered_json::parse(R"([{"role": "assistant", "content": "Hi!"}])");
  const std::string r2 = apply_chat_template(config, first, false);
  const auto s2 = assistant_spans(config, first, r2);
  ASSERT_EQ(s2.size(), 1u);
  EXPECT_EQ(r2.substr(s2[0].first, s2[0].second - s2[0].first), "Hi!</s>");
}

// --- prompts -------------------------------------------------------------------------------------

TEST(Prompts, RenderAndEncode) {
  LOAD_TOKENIZER_OR_SKIP(llama, "llama3_1");
  const std::string rendered = render_prompt(llama, "Hi", true);
  const std::string header = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  ASSERT_GE(rendered.size(), header.size());
  EXPECT_EQ(rendered.substr(rendered.size() - header.size()), header);
  const auto ids = encode_prompt(llama, "Hi", true);
  EXPECT_EQ(ids, llama.encode(rendered, false));
  EXPECT_EQ(ids[0], *llama.bos_id());
  EXPECT_NE(ids[1], *llama.bos_id());
  EXPECT_EQ(render_prompt(llama, "Hi", false), "Hi");
  EXPECT_EQ(encode_prompt(llama, "Hi", false), llama.encode("Hi", true));

  LOAD_TOKENIZER_OR_SKIP(mistral, "mistral");
  EXPECT_THROW(render_prompt(mistral, "Hi", true), Error);  // no template, no silent fallback
  EXPECT_EQ(render_prompt(mistral, "Hi", true, kBuiltinChatFormat),
            "<|user|>\nHi</s><|assistant|>\n");
  const auto m = encode_prompt(mistral, "Hi", true, kBuiltinChatFormat);
  EXPECT_EQ(m, mistral.encode("<|user|>\nHi</s><|assistant|>\n", true));
  EXPECT_EQ(m[0], 1);
}

}  // namespace
}  // namespace magix
