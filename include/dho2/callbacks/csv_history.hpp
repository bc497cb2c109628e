/// @file
/// `dho2::csv_history`: a callback that writes one CSV row per epoch of `optimizer::optimize`.
#pragma once

#include <dho2/callbacks/events.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/io/output_file.hpp>

#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dho2 {

namespace detail::csv_history_impl {

// Shortest text that reads back as exactly `v` ("nan", "inf", "-inf" for non-finite values).
inline std::string number(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// RFC 4180 field: quoted (with quotes doubled) when it holds a comma, a quote or a line break.
inline std::string field(std::string_view text) {
  if (text.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace detail::csv_history_impl

/// A callback for `optimizer::optimize` that writes the history of a run to a CSV file
/// (RFC 4180, '\n' line ends), one row per epoch, flushed after every row:
///
///     epoch,iterations,train_loss,elapsed_s,<metric 1>,<metric 2>,...
///     1,469,0.61234,4.25,0.7931
///
/// - `epoch` is 1-based (the count of completed epochs, as in `summary::epochs`); `iterations`
///   the step calls so far; `train_loss` the epoch's mean training loss; `elapsed_s` the seconds
///   since the run began.
/// - The metric columns are those of `epoch_info::metrics` at the **first** epoch end this
///   callback sees, in the order they were added; the header is written then. Later epochs fill
///   the same columns: a metric missing from a later epoch leaves its cell empty, and a metric
///   that first appears later is not written (the columns are fixed).
/// - Numbers are written in the shortest form that reads back exactly (`std::to_chars`);
///   non-finite values as `nan`, `inf`, `-inf`. Names with a comma, quote or line break are
///   quoted.
///
/// The file is opened (and truncated) by the constructor, so a bad path fails before any
/// training; a file with no epoch written stays empty. The path is an output of
/// `dho2/io/output_file.hpp` (`output_stream`): a symbolic link is followed, a character device
/// or FIFO is written, a directory, socket or block device is refused. Pass it after the callbacks
/// that add metrics (hooks run in the order given). Move-only: it owns the open file.
///
/// From a hand-written loop that calls `step` itself, drive it with `dho2::hand_loop`
/// (`end_epoch` gives it the epoch's mean loss, step count and elapsed time, as `optimize` does),
/// or call `on_epoch_end` with an `epoch_info` you fill.
class csv_history {
 public:
  /// Opens (creates or truncates) `path` for writing; `label` names the path in error messages
  /// (a command-line flag such as "--log").
  /// @throws dho2::output_error "<label> '<path>': <defect>" if the path is refused or cannot be
  /// opened.
  explicit csv_history(std::string path, std::string label = "csv_history")
      : path_(std::move(path)), file_(path_, std::move(label)) {}

  /// The path written to.
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  /// The metric columns after the four fixed ones (empty until the first row is written).
  [[nodiscard]] const std::vector<std::string>& metric_columns() const noexcept { return columns_; }
  /// Data rows written so far (the header excluded).
  [[nodiscard]] index rows() const noexcept { return rows_; }

  /// Hook: writes the header (at the first call) and the epoch's row, and flushes.
  /// @throws dho2::output_error "<label> '<path>': write failed: <cause>" if the write fails
  /// (e.g. "No space left on device").
  template <model_scalar S>
  void on_epoch_end(const epoch_info<S>& info) {
    using detail::csv_history_impl::field;
    using detail::csv_history_impl::number;
    std::string text;
    if (!header_written_) {
      columns_.clear();
      for (const auto& metric : info.metrics) columns_.push_back(metric.first);
      text = "epoch,iterations,train_loss,elapsed_s";
      for (const auto& name : columns_) {
        text += ',';
        text += field(name);
      }
      text += "\n";
      header_written_ = true;
    }
    text += std::to_string(static_cast<long long>(info.epoch + 1));
    text += ',';
    text += std::to_string(static_cast<long long>(info.iterations));
    text += ',';
    text += number(info.train_loss);
    text += ',';
    text += number(info.elapsed_seconds);
    for (const auto& name : columns_) {
      text += ",";
      if (const std::optional<double> value = info.metric(name)) text += number(*value);
    }
    text += "\n";
    file_.write(text);
    ++rows_;
  }

 private:
  std::string path_;
  output_stream file_;
  std::vector<std::string> columns_;
  bool header_written_ = false;
  index rows_ = 0;
};

}  // namespace dho2
