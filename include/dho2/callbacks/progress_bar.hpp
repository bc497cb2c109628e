/// @file
/// `dho2::progress_bar`: a callback that shows the progress of `optimizer::optimize`, as a live
/// bar on a terminal or as plain lines elsewhere (CI logs, files, string streams).
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/callbacks/events.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>
#include <dho2/detail/validate.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <ostream>
#include <string>
#include <string_view>

#if defined(_WIN32)
#include <io.h>
#elif __has_include(<unistd.h>)
#include <unistd.h>
#endif

namespace dho2 {

/// How a `dho2::progress_bar` draws.
enum class progress_mode {
  /// The live bar when the stream is a terminal, plain lines otherwise.
  automatic,
  /// Always the live bar: one line per epoch rewritten in place (carriage return).
  bar,
  /// Always plain lines: one per epoch end (and one every N steps when asked).
  plain,
};

namespace detail::progress_bar_impl {

inline bool is_terminal(std::FILE* file) noexcept {
#if defined(_WIN32)
  return file != nullptr && _isatty(_fileno(file)) != 0;
#elif __has_include(<unistd.h>)
  return file != nullptr && ::isatty(::fileno(file)) != 0;
#else
  static_cast<void>(file);
  return false;
#endif
}

// The C stream behind one of the standard C++ streams, or nullptr for any other stream.
inline std::FILE* standard_file(const std::ostream& os) noexcept {
  if (&os == &std::cout) return stdout;
  if (&os == &std::cerr || &os == &std::clog) return stderr;
  return nullptr;
}

// "%.6g" of v (locale-independent for the numbers printed here: no grouping is used).
inline std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// A rate with 3 significant digits or more: "1234", "56.7", "0.89".
inline std::string rate(double per_second) {
  char buf[32];
  const int decimals = per_second >= 100.0 ? 0 : per_second >= 10.0 ? 1 : 2;
  std::snprintf(buf, sizeof buf, "%.*f", decimals, per_second);
  return buf;
}

// "4.2s", "3m07s", "2h05m09s".
inline std::string duration(double seconds) {
  char buf[48];
  if (!(seconds >= 0.0)) return "-";
  if (seconds < 60.0) {
    std::snprintf(buf, sizeof buf, "%.1fs", seconds);
    return buf;
  }
  const auto whole = static_cast<long long>(seconds + 0.5);
  const long long h = whole / 3600, m = (whole / 60) % 60, s = whole % 60;
  if (h > 0) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", h, m, s);
  } else {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", m, s);
  }
  return buf;
}

inline std::string count(index i) { return std::to_string(static_cast<long long>(i)); }

// Concatenation by appends (GCC 12 reports a bogus -Wrestrict for `"literal" + std::string&&`).
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::string out;
  out.reserve((std::string_view(parts).size() + ...));
  (out.append(std::string_view(parts)), ...);
  return out;
}

}  // namespace detail::progress_bar_impl

/// A callback for `optimizer::optimize` that reports progress (Keras-style).
///
/// - **Bar mode** (a terminal): one line per epoch, redrawn in place (carriage return) at most
///   `redraw_interval_seconds` apart (and at the first batch of each epoch):
///   `epoch 2/10 [########------------] 120/469  85.2 steps/s  ETA 4.1s  loss 0.412`
///   where the rate and the ETA (of the epoch) are measured from the start of the epoch (the end
///   of this callback's previous `on_epoch_end`) and the loss is the current batch's.
/// - **Plain mode** (not a terminal, e.g. CI logs or a file): nothing is rewritten; with
///   `print_every_steps` = N > 0 one line every N batches of an epoch
///   (`epoch 2/10  batch 120/469  loss 0.412  85.2 steps/s`).
///
/// In both modes every epoch end writes one line with the epoch, the mean training loss, the
/// elapsed time and every metric of `epoch_info::metrics` in the order they were added:
/// `epoch 2/10  train_loss 0.412  elapsed 8.3s  test_accuracy 0.8123`,
/// and the end of the run writes one line with the termination and the totals:
/// `done: completed (all 10 epochs done)  10 epochs, 4690 steps, 43.2s`.
/// Epochs are shown 1-based (the count of completed epochs, as in `summary::epochs`); losses and
/// metrics are printed with 6 significant digits.
///
/// The mode is chosen at construction: `progress_mode::automatic` (the default) draws the bar when
/// the stream is a terminal (`isatty(fileno(stream))` on POSIX, `_isatty` on Windows; an
/// `std::ostream` counts as a terminal only when it is `std::cout`, `std::cerr` or `std::clog`
/// and the matching C stream is one). The default stream is the C stream `stderr`, so progress
/// never mixes with results written to stdout. Every write is flushed.
///
/// Pass it after the callbacks that add metrics (hooks run in the order given), and last if other
/// callbacks print, so that the bar line is not interleaved with their output.
///
/// **From a hand-written loop** (one that calls `step` itself), drive it with `dho2::hand_loop`,
/// which builds the events `optimize` gives and completes the summary at the end: the lines are
/// then those of `optimize`. The hooks can also be called directly (`on_begin` with the run's
/// epochs first; `on_step` with the 0-based epoch and batch), but `on_end` prints the summary it is
/// given, and an optimizer's `get_summary()` outside `optimize` still says `running` and 0 epochs
/// (`hand_loop::end` fills them in).
class progress_bar {
 public:
  /// Minimum seconds between two redraws of the bar (at most ~10 redraws per second).
  static constexpr double redraw_interval_seconds = 0.1;
  /// Width of the bar in characters.
  static constexpr index bar_width = 20;

  /// Reports to the C stream `stream` (default `stderr`; not owned, must outlive the callback).
  /// With `print_every_steps` = N > 0, plain mode also writes a line every N batches.
  /// @throws dho2::invalid_options if `stream` is null or `print_every_steps` < 0.
  explicit progress_bar(std::FILE* stream = stderr, progress_mode mode = progress_mode::automatic,
                        index print_every_steps = 0)
      : file_(stream), every_(print_every_steps) {
    detail::require(stream != nullptr, "progress_bar stream", "null", "a valid std::FILE*");
    init(mode, detail::progress_bar_impl::is_terminal(stream));
  }

  /// Reports to the C++ stream `stream` (not owned, must outlive the callback).
  /// With `print_every_steps` = N > 0, plain mode also writes a line every N batches.
  /// @throws dho2::invalid_options if `print_every_steps` < 0.
  explicit progress_bar(std::ostream& stream, progress_mode mode = progress_mode::automatic,
                        index print_every_steps = 0)
      : os_(&stream), every_(print_every_steps) {
    init(mode,
         detail::progress_bar_impl::is_terminal(detail::progress_bar_impl::standard_file(stream)));
  }

  /// True when drawing the live bar, false when writing plain lines (fixed at construction).
  [[nodiscard]] bool draws_bar() const noexcept { return bar_; }

  /// Hook: remembers the number of epochs and starts the first epoch's clock.
  void on_begin(const run_info& info) {
    epochs_ = info.epochs;
    epoch_start_ = clock::now();
    last_draw_ = epoch_start_;
    drawn_ = 0;
    line_open_ = false;
  }

  /// Hook: redraws the bar (throttled) or writes a plain step line every N batches.
  template <model_scalar S>
  void on_step(const step_info<S>& info) {
    using namespace detail::progress_bar_impl;
    const index done = info.batch + 1;
    const bool plain_line = !bar_ && every_ > 0 && done % every_ == 0;
    if (!bar_ && !plain_line) return;
    const auto now = clock::now();
    if (bar_ && info.batch != 0 &&
        std::chrono::duration<double>(now - last_draw_).count() < redraw_interval_seconds) {
      return;
    }
    const double in_epoch = std::chrono::duration<double>(now - epoch_start_).count();
    const double per_second = in_epoch > 0.0 ? static_cast<double>(done) / in_epoch : 0.0;
    const std::string rate_text =
        per_second > 0.0 ? cat(rate(per_second), " steps/s") : std::string("- steps/s");
    const index total = info.batches_per_epoch;
    if (plain_line) {
      write(cat(epoch_label(info.epoch), "  batch ", count(done), "/", count(total), "  loss ",
                number(info.loss), "  ", rate_text, "\n"));
      return;
    }
    last_draw_ = now;
    const index filled = total > 0 ? (bar_width * std::min(done, total)) / total : bar_width;
    const double eta = per_second > 0.0 ? static_cast<double>(total - done) / per_second : -1.0;
    const std::string bar(static_cast<std::size_t>(filled), '#');
    const std::string rest(static_cast<std::size_t>(bar_width - filled), '-');
    redraw(cat(epoch_label(info.epoch), " [", bar, rest, "] ", count(done), "/", count(total), "  ",
               rate_text, "  ETA ", duration(eta), "  loss ", number(info.loss)));
  }

  /// Hook: writes the epoch line (train loss, elapsed time, every metric).
  template <model_scalar S>
  void on_epoch_end(const epoch_info<S>& info) {
    using namespace detail::progress_bar_impl;
    std::string line = cat(epoch_label(info.epoch), "  train_loss ", number(info.train_loss),
                           "  elapsed ", duration(info.elapsed_seconds));
    for (const auto& [name, value] : info.metrics) line += cat("  ", name, " ", number(value));
    if (bar_) {
      redraw(line);
      write("\n");
      line_open_ = false;
      drawn_ = 0;
    } else {
      line += '\n';
      write(line);
    }
    epoch_start_ = clock::now();  // the next epoch's rate excludes the end-of-epoch callbacks
  }

  /// Hook: ends an open bar line and writes the termination and totals.
  void on_end(const summary& s) {
    using namespace detail::progress_bar_impl;
    if (line_open_) write("\n");
    line_open_ = false;
    drawn_ = 0;
    std::string line = cat("done: ", to_string(s.termination));
    if (!s.message.empty()) line += cat(" (", s.message, ")");
    line += cat("  ", count(s.epochs), " epochs, ", count(s.steps), " steps, ",
                duration(s.total_seconds), "\n");
    write(line);
  }

 private:
  using clock = std::chrono::steady_clock;

  void init(progress_mode mode, bool terminal) {
    detail::require(every_ >= 0, "progress_bar print_every_steps", every_, ">= 0");
    bar_ = mode == progress_mode::bar || (mode == progress_mode::automatic && terminal);
  }

  [[nodiscard]] std::string epoch_label(index epoch) const {
    using namespace detail::progress_bar_impl;
    return cat("epoch ", count(epoch + 1), "/", count(epochs_));
  }

  // Rewrites the current line: '\r', the text, and blanks over what is left of a longer one.
  void redraw(std::string line) {
    const std::size_t width = line.size();
    if (width < drawn_) line.append(drawn_ - width, ' ');
    drawn_ = width;
    line_open_ = true;
    write(detail::progress_bar_impl::cat("\r", line));
  }

  void write(std::string_view text) {
    if (os_ != nullptr) {
      os_->write(text.data(), static_cast<std::streamsize>(text.size()));
      os_->flush();
    } else {
      std::fwrite(text.data(), 1, text.size(), file_);
      std::fflush(file_);
    }
  }

  std::FILE* file_ = nullptr;
  std::ostream* os_ = nullptr;
  index every_ = 0;
  bool bar_ = false;
  index epochs_ = 0;
  clock::time_point epoch_start_{};
  clock::time_point last_draw_{};
  std::size_t drawn_ = 0;
  bool line_open_ = false;
};

}  // namespace dho2
