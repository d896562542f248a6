// The parsed form of a Jinja template: expressions and statements, each with its position.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chat_template/jinja_value.hpp"

namespace magix::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Pos {
  int line = 1, column = 1;
};

struct Expr {
  enum class K {
    Literal,  // value
    Name,     // name
    List,     // args
    Tuple,    // args
    Dict,     // args = key, value, key, value, ...
    GetAttr,  // args[0].name
    GetItem,  // args[0][args[1]]
    Slice,    // args[0][args[1]:args[2]:args[3]] (null parts absent)
    Call,     // args[0](args[1:], kwargs)
    Filter,   // args[0] | name(args[1:], kwargs)
    Test,     // args[0] is [not] name(args[1:], kwargs)
    Unary,    // name in {"-", "+", "not"}, args[0]
    Binary,   // name in {"+","-","*","/","//","%","**","~","and","or"}, args[0], args[1]
    Compare,  // args[0] ops[k] args[k+1]; ops in {"==","!=","<","<=",">",">=","in","notin"}
    Cond,     // args[1] if args[0] else args[2] (args[2] null: undefined)
  };
  K k;
  Pos pos;
  Value value;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;
};

// An assignment target: a name, a namespace attribute (ns.attr) or a tuple of names.
struct Target {
  std::vector<std::string> names;  // several: unpacking
  std::string attr;                // non-empty: names[0].attr
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Stmt {
  enum class K {
    Text,         // text
    Print,        // expr
    If,           // conds[k] -> bodies[k]; else_body
    For,          // target in expr [if expr2] body else_body
    Set,          // target = expr
    SetBlock,     // target = rendered body, through filters (filter exprs chained on a null base)
    Macro,        // name(params) body
    CallBlock,    // expr (a call) with caller(params) = body
    FilterBlock,  // body rendered, then filter expr
    With,         // set targets = exprs in a new scope, body
    Break,
    Continue,
  };
  K k;
  Pos pos;
  std::string text;
  ExprPtr expr, expr2;
  Target target;
  std::vector<ExprPtr> conds;
  std::vector<Body> bodies;
  Body body, else_body;
  std::vector<MacroParam> params;
  std::vector<std::pair<Target, ExprPtr>> assignments;  // With
  bool recursive = false;
  bool catch_varargs = true, catch_kwargs = true;  // Macro: extra arguments allowed
};

struct Template {
  std::string source;      // as given
  std::string normalized;  // what positions refer to
  Body body;
};

// Parses a template; throws magix::Error "template syntax error at line L, column C: ...".
std::shared_ptr<const Template> parse_template(std::string source);

}  // namespace magix::jinja
