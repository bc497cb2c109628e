// Cross-rank agreement on named values (options, policies, model structure, data layout): every
// rank serialises its (name, value) list, the lists are all-gathered (lengths, then the text
// packed six bytes to a double), and every rank compares all of them and throws the same
// `invalid_options` naming the first setting that differs and each rank's value. What to agree
// on is the caller's (for `dho2::options`: `detail::option_fields` in fosi/options.hpp).
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace dho2::detail {

// A value the ranks must agree on, with the name an invalid_options message gives it.
struct named_field {
  std::string name;
  double value;
};

// A double as the shortest text that reads back as it (so it tells every two doubles apart,
// -0 and 0 too).
inline std::string exact_text(double v) {
  char buffer[32];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
  return ec == std::errc() ? std::string(buffer, end) : std::string("?");
}

// Settings list <-> text: name, unit separator, value, record separator.
inline std::string serialise_settings(std::span<const std::pair<std::string, std::string>> s) {
  std::string out;
  for (const auto& [name, value] : s)
    out.append(name).append(1, '\x1f').append(value).append(1, '\x1e');
  return out;
}

inline std::vector<std::pair<std::string, std::string>> parse_settings(std::string_view text) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!text.empty()) {
    const std::size_t end = text.find('\x1e');
    const std::string_view record = text.substr(0, end);
    const std::size_t unit = record.find('\x1f');
    out.emplace_back(
        std::string(record.substr(0, unit)),
        unit == std::string_view::npos ? std::string() : std::string(record.substr(unit + 1)));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return out;
}

// Every rank's `mine`, in rank order (a collective: two all-gathers).
template <class Transport>
std::vector<std::string> all_gather_text(Transport& t, std::string_view mine) {
  constexpr std::size_t per_double = 6;  // 48 bits: exact in a double's 53-bit mantissa
  const auto p = static_cast<std::size_t>(t.size());
  const auto me = static_cast<std::size_t>(t.rank());
  std::vector<double> lengths(p, 0.0);
  lengths[me] = static_cast<double>(mine.size());
  std::vector<index> one(p + 1);
  for (std::size_t r = 0; r <= p; ++r) one[r] = static_cast<index>(r);
  const double my_length = lengths[me];
  t.all_gather(std::span<const double>(&my_length, 1), std::span<double>(lengths),
               std::span<const index>(one));
  std::vector<index> offsets(p + 1, 0);
  for (std::size_t r = 0; r < p; ++r) {
    const auto words = (static_cast<std::size_t>(lengths[r]) + per_double - 1) / per_double;
    offsets[r + 1] = offsets[r] + static_cast<index>(words);
  }
  std::vector<double> packed(static_cast<std::size_t>(offsets[me + 1] - offsets[me]), 0.0);
  for (std::size_t i = 0; i < mine.size(); ++i) {
    const auto byte = static_cast<std::uint64_t>(static_cast<unsigned char>(mine[i]));
    const auto word = static_cast<std::uint64_t>(packed[i / per_double]);
    packed[i / per_double] = static_cast<double>(word | (byte << (8U * (i % per_double))));
  }
  std::vector<double> all(static_cast<std::size_t>(offsets[p]), 0.0);
  t.all_gather(std::span<const double>(packed), std::span<double>(all),
               std::span<const index>(offsets));
  std::vector<std::string> texts(p);
  for (std::size_t r = 0; r < p; ++r) {
    const auto length = static_cast<std::size_t>(lengths[r]);
    texts[r].resize(length);
    for (std::size_t i = 0; i < length; ++i) {
      const auto word =
          static_cast<std::uint64_t>(all[static_cast<std::size_t>(offsets[r]) + i / per_double]);
      texts[r][i] = static_cast<char>((word >> (8U * (i % per_double))) & 0xffU);
    }
  }
  return texts;
}

// "3 on rank 0, 5 on rank 1", ranks of one value grouped ("3 on ranks 0, 2; 5 on rank 1"),
// at most 8 distinct values and 16 ranks per value shown.
inline std::string each_rank_value(const std::vector<std::string>& values) {
  std::vector<std::pair<std::string, std::vector<std::size_t>>> groups;
  for (std::size_t r = 0; r < values.size(); ++r) {
    bool found = false;
    for (auto& [value, ranks] : groups) {
      if (value == values[r]) {
        ranks.push_back(r);
        found = true;
        break;
      }
    }
    if (!found) groups.push_back({values[r], {r}});
  }
  const bool two_singles = groups.size() == values.size();
  std::string out;
  for (std::size_t g = 0; g < groups.size() && g < 8; ++g) {
    const auto& [value, ranks] = groups[g];
    if (g > 0) out += two_singles ? ", " : "; ";
    out += value.empty() ? "(none)" : value;
    out += ranks.size() == 1 ? " on rank " : " on ranks ";
    for (std::size_t i = 0; i < ranks.size() && i < 16; ++i) {
      if (i > 0) out += ", ";
      out += std::to_string(ranks[i]);
    }
    if (ranks.size() > 16) out += ", … (" + std::to_string(ranks.size()) + " ranks)";
  }
  if (groups.size() > 8) out += "; … (" + std::to_string(groups.size()) + " distinct values)";
  return out;
}

// Throws the same invalid_options on every rank when the ranks' (name, value) lists differ:
// the first name (in rank 0's order, then the others') whose value differs on some rank (a
// name a rank lacks has the value "(none)"), with each rank's value. A collective.
template <class Transport>
void check_settings_agree(Transport& t,
                          std::span<const std::pair<std::string, std::string>> settings) {
  if (t.size() <= 1) return;
  const std::vector<std::string> texts = all_gather_text(t, serialise_settings(settings));
  bool same = true;
  for (const std::string& text : texts) same = same && text == texts.front();
  if (same) return;
  std::vector<std::vector<std::pair<std::string, std::string>>> lists;
  lists.reserve(texts.size());
  for (const std::string& text : texts) lists.push_back(parse_settings(text));
  const auto value_of = [](const auto& list, const std::string& name) -> std::string {
    for (const auto& [n, v] : list) {
      if (n == name) return v;
    }
    return {};
  };
  for (const auto& list : lists) {
    for (const auto& entry : list) {
      std::vector<std::string> values;
      values.reserve(lists.size());
      bool differs = false;
      for (const auto& other : lists) {
        values.push_back(value_of(other, entry.first));
        differs = differs || values.back() != values.front();
      }
      if (!differs) continue;
      throw invalid_options(entry.first, each_rank_value(values),
                            "identical on all " + std::to_string(t.size()) + " ranks");
    }
  }
  throw invalid_options("settings order", "different on some ranks",
                        "identical on all " + std::to_string(t.size()) + " ranks");
}

// check_settings_agree for named doubles (compared bit for bit: -0 and 0 differ).
template <class Transport>
void check_fields_agree(Transport& t, const std::vector<named_field>& fields) {
  std::vector<std::pair<std::string, std::string>> settings;
  settings.reserve(fields.size());
  for (const named_field& f : fields) settings.emplace_back(f.name, exact_text(f.value));
  check_settings_agree(t, std::span<const std::pair<std::string, std::string>>(settings));
}

// Samples in a batch, when the model can tell (`m.batch_size(b)`); 1 otherwise.
template <class M, class B>
double batch_weight(const M& model, const B& batch) {
  if constexpr (requires { model.batch_size(batch); }) {
    return static_cast<double>(model.batch_size(batch));
  } else {
    return 1.0;
  }
}

}  // namespace dho2::detail
