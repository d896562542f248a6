// The parser of the Jinja interpreter (internal), following jinja2's grammar (parser.py).
// Statements are parsed in jinja_parser.cpp, expressions in jinja_parser_expr.cpp.
#pragma once

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

#include "chat_template/jinja_ast.hpp"
#include "chat_template/jinja_lexer.hpp"
#include "magix/error.hpp"

namespace magix::jinja {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  Body parse_all() {
    Body body = parse_body({});
    return body;
  }

 private:
  const Token& cur() const { return toks_[i_]; }
  const Token& peek(size_t n = 1) const { return toks_[std::min(i_ + n, toks_.size() - 1)]; }
  Pos pos() const { return Pos{cur().line, cur().column}; }
  void next() {
    if (i_ + 1 < toks_.size()) ++i_;
  }
  bool is_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == Tok::Name && cur().text == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::Data:
        return "template data";
      case Tok::VarBegin:
        return "begin of print statement";
      case Tok::VarEnd:
        return "end of print statement";
      case Tok::BlockBegin:
        return "begin of statement block";
      case Tok::BlockEnd:
        return "end of statement block";
      case Tok::Eof:
        return "end of template";
      case Tok::String:
        return "string";
      default:
        return "'" + t.text + "'";
    }
  }

  [[noreturn]] void fail_at(const Token& t, const std::string& what) const {
    MAGIX_FAIL("template syntax error at line {}, column {}: {}", t.line, t.column, what);
  }
  [[noreturn]] void fail(const std::string& what) const { fail_at(cur(), what); }

  void expect_op(const char* op) {
    if (!skip_op(op)) fail(fmt::format("expected '{}', got {}", op, describe(cur())));
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail(fmt::format("expected a name, got {}", describe(cur())));
    std::string n = cur().text;
    next();
    return n;
  }
  void expect_block_end() {
    if (cur().type != Tok::BlockEnd)
      fail(fmt::format("expected end of statement block, got {}", describe(cur())));
    next();
  }

  // Statements up to a block whose first name is in `ends`; leaves the stream on that name.
  Body parse_body(std::initializer_list<const char*> ends);

  // After a nested body: the current token is the end name; consume "name %}".
  void end_block();

  StmtPtr parse_statement();

  void parse_signature(Stmt& s);

  Target parse_target(bool with_tuple, bool with_namespace);

  bool is_tuple_end(std::initializer_list<const char*> extra) const;

  ExprPtr make(Expr::K k, Pos p) {
    auto e = std::make_unique<Expr>();
    e->k = k;
    e->pos = p;
    return e;
  }

  ExprPtr parse_tuple(bool with_condexpr, std::initializer_list<const char*> extra,
                      bool explicit_parens = false);

  ExprPtr parse_expression(bool with_condexpr);

  ExprPtr parse_condexpr();

  ExprPtr binary(const char* op, Pos p, ExprPtr l, ExprPtr r) {
    auto e = make(Expr::K::Binary, p);
    e->name = std::string(op);  // (not `= op`: GCC 12 warns -Wrestrict falsely on that)
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_or();
  ExprPtr parse_and();
  ExprPtr parse_not();
  ExprPtr parse_compare();
  ExprPtr parse_math1();
  ExprPtr parse_concat();
  ExprPtr parse_math2();
  ExprPtr parse_pow();
  ExprPtr parse_unary(bool with_filter);

  ExprPtr parse_primary();

  ExprPtr parse_postfix(ExprPtr node);

  ExprPtr parse_subscript(ExprPtr node, Pos p);

  // "(args, name=value)" after `callee`; fills a Call node (or the given filter/test node).
  void parse_call_args(Expr& e);

  ExprPtr parse_call(ExprPtr callee);

  ExprPtr parse_filter_one(ExprPtr node);

  // "| f(args) | g" (or "f | g" for {% filter %}), applied to `node` (null: filled at run time).
  ExprPtr parse_filter_chain(ExprPtr node, bool first_has_pipe = true);

  ExprPtr parse_filter_expr(ExprPtr node);

  // Nesting limit for expressions and statements: deeper input is an error, not a stack overflow.
  static constexpr int kMaxDepth = 200;
  void enter() {
    if (++depth_ > kMaxDepth) fail("the template nests expressions or blocks too deeply");
  }

  std::vector<Token> toks_;
  size_t i_ = 0;
  int depth_ = 0;
  bool uses_varargs_ = false, uses_kwargs_ = false;  // in the macro being parsed
  int loop_depth_ = 0;  // for loops around the current position: break/continue need one
};

}  // namespace magix::jinja
