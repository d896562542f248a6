// Training and prompt data: files -> records -> token examples (docs/data.md).
//
// Two stages, kept apart so that file errors are testable without a tokenizer:
//   1. read_records: a .jsonl / .json / .txt file -> Records (a text, or a list of messages),
//      each with its 1-based line. Bad records are an error naming file and line, or, with
//      skip_bad_records, skipped and counted (never silently).
//   2. encode_record / load_examples: Records -> Examples (token ids + a per-token loss mask),
//      as the reference `train` script tokenises (eos appended to texts, truncation to
//      max_length + 1 tokens keeping the post-processor's special tokens), plus
//      `train_on: assistant` masks exact to the token.
// Batching (shuffle, padding, packing, data-parallel slices) lives in data_loader.hpp.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "magix/tokenizer.hpp"
#include "magix/tokenizer_config.hpp"

namespace magix {

// ---------------------------------------------------------------------------------------------
// Stage 1: records from files.

enum class DataFormat { kJsonl, kJson, kTxt };

// By extension: .jsonl -> kJsonl, .json -> kJson, .txt -> kTxt; anything else is an error.
DataFormat data_format_from_path(const std::filesystem::path& path);

// One example as read from a file.
struct Record {
  int64_t line = 0;                 // 1-based line where the record starts in its file
  bool is_messages = false;         // true: `messages` holds the value; false: `text` does
  std::string text;                 // valid UTF-8
  nlohmann::ordered_json messages;  // non-empty array of objects with string role and content
};

struct ReadOptions {
  std::string field = "text";     // the object field (column) to read (ignored for .txt)
  bool allow_messages = true;     // false: the field must be a string (prompts)
  bool skip_bad_records = false;  // skip and count bad records instead of failing
  // For sources with configs and splits (hub datasets, save_to_disk DatasetDicts, folders of
  // <split>-*.parquet files): the config (a subfolder; empty: data/ or the only one) and the
  // split. Sources of a single split (a file, a glob, a folder without split names) ignore them.
  std::string config;
  std::string split = "train";
};

// The longest record (a line of .jsonl/.txt, or one row's value of a parquet/arrow column)
// magix reads: a longer one is a bad record.
inline constexpr int64_t kMaxRecordBytes = int64_t{64} << 20;

struct ReadStats {
  static constexpr size_t kMaxReported = 10;
  int64_t records = 0;                      // records returned
  int64_t skipped = 0;                      // bad records skipped (skip_bad_records)
  int64_t blank_lines = 0;                  // empty or whitespace-only lines: not records
  std::vector<std::string> skipped_errors;  // "file:line: why" for the first kMaxReported skips
};

// A stream of records from a data source, in order, with bounded memory: text files are read
// in chunks (and gunzipped on the fly), parquet files a batch of rows of a row group at a time,
// Arrow IPC files (datasets' save_to_disk) a record batch at a time.
class RecordReader {
 public:
  virtual ~RecordReader() = default;
  // Moves the next record into `record`; false at the end. Bad records throw, or with
  // skip_bad_records are counted in the ReadStats given to open_records and skipped.
  virtual bool next(Record& record) = 0;
  // Where the record last returned comes from, for messages: "data.jsonl:3" (1-based line) or
  // "train-00000-of-00002.parquet row 3" (1-based row of that file).
  virtual std::string where(const Record& record) const = 0;
};

// Opens a data source (docs/data.md), resolved in this order:
//  - several sources separated by commas (when the whole string is not an existing path), read
//    one after the other;
//  - an existing file, by extension: .jsonl, .json (an array of objects, or JSON lines as
//    datasets' to_json writes), .txt, each optionally .gz (gzip or zlib); .parquet; .arrow
//    (Arrow IPC stream or file);
//  - an existing folder: a datasets save_to_disk DatasetDict (dataset_dict.json: options.split
//    picks the split folder) or Dataset (state.json: its data-NNNNN-of-NNNNN.arrow files), else a
//    folder of data files laid out as the hub serves them: [<config>/ or data/] then
//    <split>-*.parquet, <split>.jsonl, <split>/*.parquet, ... (no split names: every file);
//  - a glob pattern (`data/*.parquet`), files in sorted order;
//  - a hub dataset name ORG/NAME in the local HF cache (datasets--ORG--NAME/snapshots/<rev>/,
//    dataset_revision() or refs/main), read as a folder; its files must resolve inside the cache
//    repository (blobs/). Nothing is downloaded.
// Parquet and Arrow need magix built with Arrow (MAGIX_ARROW); without it they are an error
// saying how to enable it. A parquet/arrow column is converted per row to the JSON value a
// .jsonl line holds (strings; lists of structs such as messages; numbers, booleans, null).
std::unique_ptr<RecordReader> open_records(const std::filesystem::path& source,
                                           const ReadOptions& options, ReadStats* stats = nullptr);

// Whether this build reads parquet and Arrow files (MAGIX_ARROW).
bool has_arrow_support();

// Reads every record of `source` (any source open_records takes). Errors name the file and the
// 1-based line: "data.jsonl:3: invalid JSON: ...". TXT: one record per line, the line without its
// "\n" and a trailing "\r" (CRLF files); empty lines are skipped (counted in blank_lines). JSONL:
// one JSON object per line; blank lines skipped. JSON: one top-level array of objects, each
// element's line being the line where it starts.
std::vector<Record> read_records(const std::filesystem::path& path, const ReadOptions& options,
                                 ReadStats* stats = nullptr);

// The same on in-memory file content; `source` names it in messages.
std::vector<Record> parse_records(std::string_view content, DataFormat format,
                                  const std::string& source, const ReadOptions& options,
                                  ReadStats* stats = nullptr);

// Checks a JSON value as a record field: a string (text), or when allowed a non-empty list of
// {role: string, content: string, ...}. Returns the reason it is bad, or nullopt.
std::optional<std::string> check_record_value(const nlohmann::ordered_json& value,
                                              const std::string& field, bool allow_messages);

// Byte offset of the first invalid UTF-8 sequence in `s`, or nullopt when valid.
std::optional<size_t> find_invalid_utf8(std::string_view s);

// ---------------------------------------------------------------------------------------------
// Stage 2: token examples.

// Which target tokens count towards the loss.
enum class TrainOn {
  kAll,        // every non-pad target (the reference)
  kAssistant,  // only assistant turns: content and the end-of-turn marker (docs/data.md)
};
TrainOn parse_train_on(std::string_view name);  // "all" | "assistant"

struct EncodeOptions {
  bool use_chat_template = false;
  TrainOn train_on = TrainOn::kAll;
  int64_t max_length = 1024;                      // examples keep at most max_length + 1 tokens
  std::optional<std::string> chat_template_name;  // a named template of the tokenizer
  nlohmann::ordered_json template_extra = nlohmann::ordered_json::object();  // extra variables
};

// With use_chat_template: throws, naming --chat_template_name builtin, when `tokenizer` has no
// chat template (no silent fallback to the built-in format); a named template must exist.
void check_chat_template(const Tokenizer& tokenizer,
                         const std::optional<std::string>& template_name);

struct DatasetOptions {
  std::filesystem::path path;  // any source open_records takes
  std::string data_field = "text";
  bool skip_bad_records = false;
  std::string data_config;      // ReadOptions::config: hub/folder dataset config
  std::string split = "train";  // ReadOptions::split
  EncodeOptions encode;
};

// A tokenised example: ids[i] is token i; loss_mask[i] = 1 when predicting ids[i] from
// ids[0..i) counts towards the loss (loss_mask[0] is never used: nothing predicts token 0).
struct Example {
  std::vector<int32_t> ids;
  std::vector<uint8_t> loss_mask;  // same length as ids
};

struct DatasetStats {
  ReadStats read;
  int64_t examples = 0;         // examples returned
  int64_t skipped_encode = 0;   // records skipped because they could not be encoded
  int64_t truncated = 0;        // examples cut to max_length + 1 tokens
  int64_t without_targets = 0;  // examples with no counted target (e.g. truncated away)
  // What truncation to max_length + 1 tokens costs: counted targets before and after it, the
  // examples that lost at least one, and the max_length that keeps 99% of examples whole.
  int64_t targets_before_truncation = 0;
  int64_t targets = 0;
  int64_t examples_losing_targets = 0;
  int64_t max_length_p99 = 0;
  int64_t tokens = 0;                       // tokens over all examples
  std::vector<std::string> skipped_errors;  // "file:line: why" for the first skipped encodes
  int64_t skipped() const { return read.skipped + skipped_encode; }
};

// The text a record is tokenised from: the text itself, or the conversation rendered by the
// tokenizer's chat template (or the built-in format with chat_template_name kBuiltinChatFormat;
// check_chat_template), add_generation_prompt=false.
std::string render_record(const Record& record, const Tokenizer& tokenizer,
                          const EncodeOptions& options);

// Tokenises one record (throws magix::Error without a file location; load_examples adds it).
//  - text (use_chat_template=false): tokenizer post-processor (bos where it adds one) + eos
//    appended (the reference's add_eos_token), unless the post-processor already ends in eos;
//  - messages (use_chat_template=true; check_chat_template): the rendered conversation; with
//    the tokenizer's own template encoded without special tokens (the template writes them, as
//    transformers' apply_chat_template(tokenize=True)); with the built-in format with them (the
//    reference);
//  - longer than max_length + 1 tokens: the content is cut, the post-processor's special
//    tokens and the appended eos are kept (transformers' truncation).
Example encode_record(const Record& record, const Tokenizer& tokenizer,
                      const EncodeOptions& options);

// Byte spans [begin, end) of `rendered` (= the conversation rendered with add_generation_prompt
// false) that count under train_on=assistant: per assistant message, from the end of its role
// header (the generation prompt) through its content and the end-of-turn text the template
// writes after it, trailing whitespace excluded (e.g. "<|eot_id|>", "<end_of_turn>",
// "<|im_end|>", eos in the built-in format). Throws when the template's output cannot be
// matched this way.
std::vector<std::pair<size_t, size_t>> assistant_spans(
    const TokenizerConfig& config, const nlohmann::ordered_json& messages,
    const std::string& rendered, const std::optional<std::string>& template_name = std::nullopt,
    const nlohmann::ordered_json& extra = nlohmann::ordered_json::object());

// Reads and tokenises a whole file. Errors name the file and line; with skip_bad_records bad
// records (unreadable or unencodable) are skipped and counted in `stats`.
std::vector<Example> load_examples(const DatasetOptions& options, const Tokenizer& tokenizer,
                                   DatasetStats* stats = nullptr);

// The pad id for training rows: the tokenizer's pad token, else its eos (the reference sets
// pad = eos). Pad positions are masked, so the choice never changes the loss.
int32_t training_pad_id(const Tokenizer& tokenizer);

// ---------------------------------------------------------------------------------------------
// Prompts for generation (the `generate` command).

// Prompts from a .txt (one per line) or .jsonl/.json file (the string field `data_field`).
std::vector<std::string> read_prompts(const std::filesystem::path& path,
                                      const std::string& data_field = "prompt",
                                      bool skip_bad_records = false, ReadStats* stats = nullptr);

// The text generation starts from: the prompt itself, or with use_chat_template the
// conversation [{"role": "user", "content": prompt}] rendered with add_generation_prompt=true
// (check_chat_template).
std::string render_prompt(const Tokenizer& tokenizer, const std::string& prompt,
                          bool use_chat_template,
                          const std::optional<std::string>& template_name = std::nullopt,
                          const nlohmann::ordered_json& extra = nlohmann::ordered_json::object());

// render_prompt, tokenised: plain prompts and the built-in format with the post-processor's
// special tokens (bos), the tokenizer's own template without them (it writes its own).
std::vector<int32_t> encode_prompt(
    const Tokenizer& tokenizer, const std::string& prompt, bool use_chat_template,
    const std::optional<std::string>& template_name = std::nullopt,
    const nlohmann::ordered_json& extra = nlohmann::ordered_json::object());

}  // namespace magix
