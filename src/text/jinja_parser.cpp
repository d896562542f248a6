// Recursive-descent parser following jinja2's grammar (parser.py): precedence from low to high
// is conditional, or, and, not, comparison, + -, ~, * / // %, **, unary - +, then postfix
// (attribute, subscript, call) and filter/test chains.
#include <cstdlib>
#include <initializer_list>

#include "magix/error.hpp"
#include "text/jinja_ast.hpp"
#include "text/jinja_builtins.hpp"
#include "text/jinja_lexer.hpp"

namespace magix::jinja {

namespace {

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
      case Tok::Data: return "template data";
      case Tok::VarBegin: return "begin of print statement";
      case Tok::VarEnd: return "end of print statement";
      case Tok::BlockBegin: return "begin of statement block";
      case Tok::BlockEnd: return "end of statement block";
      case Tok::Eof: return "end of template";
      case Tok::String: return "string";
      default: return "'" + t.text + "'";
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
    if (cur().type != Tok::BlockEnd) fail(fmt::format("expected end of statement block, got {}", describe(cur())));
    next();
  }

  // Statements up to a block whose first name is in `ends`; leaves the stream on that name.
  Body parse_body(std::initializer_list<const char*> ends) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::Eof) {
        if (ends.size() == 0) return body;
        std::string want;
        for (const char* e : ends) want += (want.empty() ? "'" : " or '") + std::string(e) + "'";
        fail(fmt::format("unexpected end of template, expected {}", want));
      }
      if (t.type == Tok::Data) {
        auto s = std::make_unique<Stmt>();
        s->k = Stmt::K::Text;
        s->pos = pos();
        s->text = t.text;
        body.push_back(std::move(s));
        next();
      } else if (t.type == Tok::VarBegin) {
        next();
        auto s = std::make_unique<Stmt>();
        s->k = Stmt::K::Print;
        s->pos = pos();
        s->expr = parse_tuple(true, {});
        if (cur().type != Tok::VarEnd) fail(fmt::format("expected end of print statement, got {}", describe(cur())));
        next();
        body.push_back(std::move(s));
      } else if (t.type == Tok::BlockBegin) {
        next();
        if (cur().type != Tok::Name) fail(fmt::format("expected a statement name, got {}", describe(cur())));
        for (const char* e : ends) {
          if (cur().text == e) return body;
        }
        body.push_back(parse_statement());
      } else {
        fail(fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  // After a nested body: the current token is the end name; consume "name %}".
  void end_block() {
    next();
    expect_block_end();
  }

  StmtPtr parse_statement() {
    const Token& t = cur();
    auto s = std::make_unique<Stmt>();
    s->pos = pos();
    const std::string& n = t.text;
    if (n == "if") {
      next();
      s->k = Stmt::K::If;
      s->conds.push_back(parse_tuple(false, {}));
      expect_block_end();
      while (true) {
        s->bodies.push_back(parse_body({"elif", "else", "endif"}));
        if (skip_name("elif")) {
          s->conds.push_back(parse_tuple(false, {}));
          expect_block_end();
          continue;
        }
        if (skip_name("else")) {
          expect_block_end();
          s->else_body = parse_body({"endif"});
        }
        end_block();
        break;
      }
    } else if (n == "for") {
      next();
      s->k = Stmt::K::For;
      s->target = parse_target(true, false);
      if (!skip_name("in")) fail(fmt::format("expected 'in', got {}", describe(cur())));
      s->expr = parse_tuple(false, {"recursive"});
      if (skip_name("if")) s->expr2 = parse_expression(true);
      if (skip_name("recursive")) fail("recursive for loops are not supported");
      expect_block_end();
      ++loop_depth_;
      s->body = parse_body({"endfor", "else"});
      --loop_depth_;
      if (skip_name("else")) {
        expect_block_end();
        s->else_body = parse_body({"endfor"});
      }
      end_block();
    } else if (n == "set") {
      next();
      s->target = parse_target(true, true);
      if (skip_op("=")) {
        s->k = Stmt::K::Set;
        s->expr = parse_tuple(true, {});
        expect_block_end();
      } else {
        s->k = Stmt::K::SetBlock;
        if (is_op("|")) s->expr = parse_filter_chain(nullptr);
        expect_block_end();
        s->body = parse_body({"endset"});
        end_block();
      }
    } else if (n == "macro") {
      next();
      s->k = Stmt::K::Macro;
      s->text = expect_name();
      parse_signature(*s);
      expect_block_end();
      int saved_depth = loop_depth_;
      loop_depth_ = 0;
      s->body = parse_body({"endmacro"});
      loop_depth_ = saved_depth;
      end_block();
    } else if (n == "call") {
      next();
      s->k = Stmt::K::CallBlock;
      if (is_op("(")) parse_signature(*s);
      s->expr = parse_expression(true);
      if (s->expr->k != Expr::K::Call) fail_at(t, "expected call");
      expect_block_end();
      s->body = parse_body({"endcall"});
      end_block();
    } else if (n == "filter") {
      next();
      s->k = Stmt::K::FilterBlock;
      s->expr = parse_filter_chain(nullptr, /*first_has_pipe=*/false);
      expect_block_end();
      s->body = parse_body({"endfilter"});
      end_block();
    } else if (n == "with") {
      next();
      s->k = Stmt::K::With;
      while (cur().type != Tok::BlockEnd) {
        if (!s->assignments.empty()) expect_op(",");
        Target target = parse_target(false, false);
        expect_op("=");
        s->assignments.emplace_back(std::move(target), parse_expression(true));
      }
      expect_block_end();
      s->body = parse_body({"endwith"});
      end_block();
    } else if (n == "generation") {
      // transformers' AssistantTracker: renders its body unchanged
      next();
      s->k = Stmt::K::With;
      expect_block_end();
      s->body = parse_body({"endgeneration"});
      end_block();
    } else if (n == "break" || n == "continue") {
      if (loop_depth_ == 0) fail(fmt::format("'{}' outside of a loop", n));
      next();
      s->k = n == "break" ? Stmt::K::Break : Stmt::K::Continue;
      expect_block_end();
    } else {
      fail(fmt::format("unknown or unsupported tag '{}'", n));
    }
    return s;
  }

  void parse_signature(Stmt& s) {
    expect_op("(");
    while (!is_op(")")) {
      if (!s.params.empty()) expect_op(",");
      MacroParam p;
      p.name = expect_name();
      if (skip_op("=")) {
        p.default_value = parse_expression(true);
      } else if (!s.params.empty() && s.params.back().default_value) {
        fail("non-default argument follows default argument");
      }
      s.params.push_back(std::move(p));
    }
    expect_op(")");
  }

  Target parse_target(bool with_tuple, bool with_namespace) {
    Target target;
    target.names.push_back(expect_name());
    if (with_namespace && is_op(".")) {
      next();
      target.attr = expect_name();
      return target;
    }
    while (with_tuple && skip_op(",")) {
      if (is_name("in") || cur().type != Tok::Name) break;
      target.names.push_back(expect_name());
    }
    return target;
  }

  bool is_tuple_end(std::initializer_list<const char*> extra) const {
    if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || is_op(")")) return true;
    for (const char* e : extra) {
      if (is_name(e)) return true;
    }
    return false;
  }

  ExprPtr make(Expr::K k, Pos p) {
    auto e = std::make_unique<Expr>();
    e->k = k;
    e->pos = p;
    return e;
  }

  ExprPtr parse_tuple(bool with_condexpr, std::initializer_list<const char*> extra, bool explicit_parens = false) {
    Pos p = pos();
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail(fmt::format("expected an expression, got {}", describe(cur())));
    }
    auto e = make(Expr::K::Tuple, p);
    e->args = std::move(items);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    Pos p = pos();
    ExprPtr expr1 = parse_or();
    while (skip_name("if")) {
      auto e = make(Expr::K::Cond, p);
      ExprPtr cond = parse_or();
      ExprPtr otherwise = skip_name("else") ? parse_condexpr() : nullptr;
      e->args.push_back(std::move(cond));
      e->args.push_back(std::move(expr1));
      e->args.push_back(std::move(otherwise));
      expr1 = std::move(e);
    }
    return expr1;
  }

  ExprPtr binary(const char* op, Pos p, ExprPtr l, ExprPtr r) {
    auto e = make(Expr::K::Binary, p);
    e->name = op;
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      Pos p = pos();
      next();
      left = binary("or", p, std::move(left), parse_and());
    }
    return left;
  }
  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      Pos p = pos();
      next();
      left = binary("and", p, std::move(left), parse_not());
    }
    return left;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      Pos p = pos();
      next();
      auto e = make(Expr::K::Unary, p);
      e->name = "not";
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    Pos p = pos();
    ExprPtr first = parse_math1();
    ExprPtr e;
    while (true) {
      std::string op;
      if (cur().type == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                    cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && peek().type == Tok::Name && peek().text == "in") {
        op = "notin";
        next();
        next();
      } else {
        break;
      }
      if (!e) {
        e = make(Expr::K::Compare, p);
        e->args.push_back(std::move(first));
      }
      e->ops.push_back(op);
      e->args.push_back(parse_math1());
    }
    return e ? std::move(e) : std::move(first);
  }
  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      Pos p = pos();
      const char* op = is_op("+") ? "+" : "-";
      next();
      left = binary(op, p, std::move(left), parse_concat());
    }
    return left;
  }
  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      Pos p = pos();
      next();
      left = binary("~", p, std::move(left), parse_math2());
    }
    return left;
  }
  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      Pos p = pos();
      std::string op = cur().text;
      next();
      left = binary(op == "*" ? "*" : op == "/" ? "/" : op == "//" ? "//" : "%", p, std::move(left), parse_pow());
    }
    return left;
  }
  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      Pos p = pos();
      next();
      left = binary("**", p, std::move(left), parse_unary(true));
    }
    return left;
  }
  ExprPtr parse_unary(bool with_filter) {
    Pos p = pos();
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      auto e = make(Expr::K::Unary, p);
      e->name = cur().text;
      next();
      e->args.push_back(parse_unary(false));
      node = std::move(e);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    Pos p = pos();
    if (t.type == Tok::Name) {
      auto e = make(Expr::K::Literal, p);
      if (t.text == "true" || t.text == "True") {
        e->value = Value::boolean(true);
      } else if (t.text == "false" || t.text == "False") {
        e->value = Value::boolean(false);
      } else if (t.text == "none" || t.text == "None") {
        e->value = Value::none();
      } else {
        e->k = Expr::K::Name;
        e->name = t.text;
      }
      next();
      return e;
    }
    if (t.type == Tok::String) {
      std::string s;
      while (cur().type == Tok::String) {
        s += cur().text;
        next();
      }
      auto e = make(Expr::K::Literal, p);
      e->value = Value::str(std::move(s));
      return e;
    }
    if (t.type == Tok::Integer) {
      auto e = make(Expr::K::Literal, p);
      errno = 0;
      long long v = std::strtoll(t.text.c_str(), nullptr, 10);
      if (errno == ERANGE) fail("integer literal out of range");
      e->value = Value::integer(v);
      next();
      return e;
    }
    if (t.type == Tok::Float) {
      auto e = make(Expr::K::Literal, p);
      e->value = Value::real(std::strtod(t.text.c_str(), nullptr));
      next();
      return e;
    }
    if (is_op("(")) {
      next();
      ExprPtr e = parse_tuple(true, {}, true);
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      next();
      auto e = make(Expr::K::List, p);
      while (!is_op("]")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("]")) break;
        e->args.push_back(parse_expression(true));
      }
      expect_op("]");
      return e;
    }
    if (is_op("{")) {
      next();
      auto e = make(Expr::K::Dict, p);
      while (!is_op("}")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("}")) break;
        e->args.push_back(parse_expression(true));
        expect_op(":");
        e->args.push_back(parse_expression(true));
      }
      expect_op("}");
      return e;
    }
    fail(fmt::format("unexpected {}", describe(t)));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      Pos p = pos();
      if (is_op(".")) {
        next();
        if (cur().type == Tok::Name) {
          auto e = make(Expr::K::GetAttr, p);
          e->name = cur().text;
          e->args.push_back(std::move(node));
          node = std::move(e);
        } else if (cur().type == Tok::Integer) {
          auto e = make(Expr::K::GetItem, p);
          e->args.push_back(std::move(node));
          auto idx = make(Expr::K::Literal, pos());
          idx->value = Value::integer(std::strtoll(cur().text.c_str(), nullptr, 10));
          e->args.push_back(std::move(idx));
          node = std::move(e);
        } else {
          fail("expected name or number");
        }
        next();
      } else if (is_op("[")) {
        next();
        node = parse_subscript(std::move(node), p);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node, Pos p) {
    // one subscript: an expression or a slice [a:b:c]; tuples of subscripts are not supported
    ExprPtr parts[3];
    bool is_slice = false;
    if (!is_op(":")) parts[0] = parse_expression(true);
    if (skip_op(":")) {
      is_slice = true;
      if (!is_op("]") && !is_op(":")) parts[1] = parse_expression(true);
      if (skip_op(":")) {
        if (!is_op("]")) parts[2] = parse_expression(true);
      }
    }
    if (is_op(",")) fail("tuple subscripts are not supported");
    expect_op("]");
    auto e = make(is_slice ? Expr::K::Slice : Expr::K::GetItem, p);
    e->args.push_back(std::move(node));
    for (int k = 0; k < (is_slice ? 3 : 1); ++k) e->args.push_back(std::move(parts[k]));
    return e;
  }

  // "(args, name=value)" after `callee`; fills a Call node (or the given filter/test node).
  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) {
        expect_op(",");
        if (is_op(")")) break;
      }
      first = false;
      if (is_op("*") || is_op("**")) fail("*args and **kwargs in calls are not supported");
      if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
        std::string key = cur().text;
        next();
        next();
        e.kwargs.emplace_back(key, parse_expression(true));
      } else {
        if (!e.kwargs.empty()) fail("invalid syntax for function call expression");
        e.args.push_back(parse_expression(true));
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = make(Expr::K::Call, pos());
    e->args.push_back(std::move(callee));
    parse_call_args(*e);
    return e;
  }

  ExprPtr parse_filter_one(ExprPtr node) {
    Pos p = pos();
    auto e = make(Expr::K::Filter, p);
    e->name = expect_name();
    while (is_op(".")) {
      next();
      e->name += '.';
          e->name += expect_name();
    }
    if (!has_filter(e->name)) fail_at(toks_[i_ - 1], fmt::format("No filter named '{}'.", e->name));
    e->args.push_back(std::move(node));
    if (is_op("(")) parse_call_args(*e);
    return e;
  }

  // "| f(args) | g" (or "f | g" for {% filter %}), applied to `node` (null: filled at run time).
  ExprPtr parse_filter_chain(ExprPtr node, bool first_has_pipe = true) {
    if (!first_has_pipe) node = parse_filter_one(std::move(node));
    while (skip_op("|")) node = parse_filter_one(std::move(node));
    return node;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        next();
        node = parse_filter_one(std::move(node));
      } else if (is_name("is")) {
        Pos p = pos();
        next();
        auto e = make(Expr::K::Test, p);
        e->negated = skip_name("not");
        e->name = expect_name();
        while (is_op(".")) {
          next();
          e->name += '.';
          e->name += expect_name();
        }
        if (!has_test(e->name)) fail_at(toks_[i_ - 1], fmt::format("No test named '{}'.", e->name));
        e->args.push_back(std::move(node));
        if (is_op("(")) {
          parse_call_args(*e);
        } else if ((cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Integer ||
                    cur().type == Tok::Float || is_op("(") || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) fail("You cannot chain multiple tests with is");
          e->args.push_back(parse_postfix(parse_primary()));
        }
        node = std::move(e);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> toks_;
  size_t i_ = 0;
  int loop_depth_ = 0;  // for loops around the current position: break/continue need one
};

}  // namespace

std::shared_ptr<const Template> parse_template(std::string source) {
  auto t = std::make_shared<Template>();
  t->source = std::move(source);
  t->normalized = normalize_source(t->source);
  Parser parser(tokenize(t->normalized));
  t->body = parser.parse_all();
  return t;
}

}  // namespace magix::jinja
