// dho2_train: a small pretty-printing JSON writer (RFC 8259).
#pragma once

#include <charconv>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

namespace dho2_train {

/// Builds one JSON document: objects and arrays nest, `key` precedes each member of an object,
/// commas and indentation (2 spaces) are automatic. Strings are escaped; non-finite numbers are
/// written as null. Arrays opened with `begin_array(true)` are written on one line.
class json_writer {
 public:
  json_writer& begin_object(bool one_line = false) { return open('{', one_line); }
  json_writer& end_object() { return close('}'); }
  json_writer& begin_array(bool one_line = false) { return open('[', one_line); }
  json_writer& end_array() { return close(']'); }

  json_writer& key(std::string_view name) {
    separate();
    string_literal(name);
    out_ += ": ";
    after_key_ = true;
    return *this;
  }

  json_writer& value(std::string_view s) {
    separate();
    string_literal(s);
    return *this;
  }
  json_writer& value(const char* s) { return value(std::string_view(s)); }
  json_writer& value(const std::string& s) { return value(std::string_view(s)); }
  json_writer& value(bool b) {
    separate();
    out_ += b ? "true" : "false";
    return *this;
  }
  json_writer& value(long long v) {
    separate();
    out_ += std::to_string(v);
    return *this;
  }
  json_writer& value(long v) { return value(static_cast<long long>(v)); }
  json_writer& value(int v) { return value(static_cast<long long>(v)); }
  json_writer& value(unsigned long long v) {
    separate();
    out_ += std::to_string(v);
    return *this;
  }
  json_writer& value(unsigned long v) { return value(static_cast<unsigned long long>(v)); }
  /// Shortest text that reads back as exactly `v`; null when `v` is NaN or infinite.
  json_writer& value(double v) {
    separate();
    if (!std::isfinite(v)) {
      out_ += "null";
      return *this;
    }
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out_.append(buf, r.ptr);
    return *this;
  }
  json_writer& null() {
    separate();
    out_ += "null";
    return *this;
  }

  /// `key(name).value(v)`.
  template <class T>
  json_writer& member(std::string_view name, const T& v) {
    key(name);
    return value(v);
  }

  /// The document (complete once every container is closed), with a final newline.
  [[nodiscard]] std::string str() const { return out_ + "\n"; }

 private:
  struct level {
    bool one_line;
    bool empty;
  };

  json_writer& open(char bracket, bool one_line) {
    separate();
    out_ += bracket;
    levels_.push_back({one_line || inside_one_line(), true});
    return *this;
  }

  json_writer& close(char bracket) {
    const level top = levels_.back();
    levels_.pop_back();
    if (!top.empty && !top.one_line) newline();
    out_ += bracket;
    return *this;
  }

  [[nodiscard]] bool inside_one_line() const { return !levels_.empty() && levels_.back().one_line; }

  // Before a key or a value: the comma and the line break the position needs.
  void separate() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (levels_.empty()) return;
    level& top = levels_.back();
    if (!top.empty) out_ += top.one_line ? ", " : ",";
    if (!top.one_line) newline();
    top.empty = false;
  }

  void newline() {
    out_ += '\n';
    out_.append(2 * levels_.size(), ' ');
  }

  void string_literal(std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    out_ += '"';
    for (const char ch : s) {
      const auto c = static_cast<unsigned char>(ch);
      switch (ch) {
        case '"': out_ += "\\\""; break;
        case '\\': out_ += "\\\\"; break;
        case '\b': out_ += "\\b"; break;
        case '\f': out_ += "\\f"; break;
        case '\n': out_ += "\\n"; break;
        case '\r': out_ += "\\r"; break;
        case '\t': out_ += "\\t"; break;
        default:
          if (c < 0x20) {
            out_ += "\\u00";
            out_ += hex[c >> 4U];
            out_ += hex[c & 0x0FU];
          } else {
            out_ += ch;  // UTF-8 passes through unchanged
          }
      }
    }
    out_ += '"';
  }

  std::string out_;
  std::vector<level> levels_;
  bool after_key_ = false;
};

}  // namespace dho2_train
