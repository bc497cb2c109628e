/// @file
/// `dho2::testing::transport_conformance`: one per-rank test body that checks any
/// `dho2::transport` against the contract of `<dho2/concepts/transport.hpp>`. Every rank of a
/// group calls it with its own transport object (threads for `inproc_transport`, processes for
/// MPI, either for TCP, or a user's own transport) and gets back the list of failures it saw;
/// an empty list means the transport passed on that rank.
///
/// It uses no test framework. Typical use:
/// ```
/// dho2::run_inproc(4, {}, [&](dho2::inproc_transport& t) {
///   const auto failures = dho2::testing::transport_conformance(t);
///   // report failures (each says what was expected and what was found)
/// });
/// ```
///
/// The checks, in the order they run (every rank runs the same sequence of collectives, whatever
/// fails, so a failure on one rank never desynchronises the others):
///  1. *identity*: 0 ≤ rank() < size() on every rank; an all-gather of the ranks gives 0, 1, …,
///     P − 1 (ranks are distinct) and an all-reduce of {1, size()} gives {P, P²} (all ranks agree
///     on the size);
///  2. *all_reduce_sum* for `float` and `double` at sizes 0, 1, 1000 and 100003 with
///     value(r, i) = 1000·r + (i mod 2¹⁷) + 1/4: every element equals the closed-form sum
///     1000·P(P − 1)/2 + P·(i mod 2¹⁷) + P/4 exactly (while the sums stay below 2²² in float,
///     i.e. P ≤ 28, or 2⁵¹ in double, every partial sum is a multiple of 1/4 that the type holds
///     exactly, so any summation order is exact; beyond that within 2·P·ε relative), and nothing
///     is written outside the span;
///  3. *determinism*: an all-reduce of values that round (pseudo-random, all mantissa bits used)
///     gives the same bits when repeated, and the same bits on every rank (each rank hashes its
///     result; the hashes are all-gathered and compared); the result is also within 4·P·ε·Σ|x|
///     of the exact sum;
///  4. *reduce_scatter_sum* and *all_gather* for `float` and `double` over five partitions:
///     even (n = 1000), uneven with empty shards (rank r owns 0 entries when r mod 3 = 1, else
///     3 + 17·r), fewer entries than ranks (n = ⌊P/2⌋, so some shards — for P = 1 all — are
///     empty), everything on the last rank (n = 50), and even with n = 100003. Reduce-scatter:
///     out[j] = Σ_q value(q, offsets[r] + j); all-gather of in[j] = value(r, offsets[r] + j):
///     out[i] = value(owner(i), i); nothing written outside `out`;
///  5. *broadcast* from root 0 and from root P − 1 of 0, 1, 1000 and 65537 bytes: every rank ends
///     with the root's bytes (pattern (37·root + 11·i + 5) mod 256) and the root's are intact;
///  6. *barrier*: two barriers return on every rank, and a collective after them still works;
///  7. *split*: (a) colour r mod 2, key r: the sub-rank is ⌊r/2⌋ and the sub-size (P + 1 − colour)
///     div 2; an all-reduce of the parent ranks and an all-gather of them inside the sub-group
///     give the expected sum and order; (b) the same with key −r (sub-ranks reversed); (c) one
///     colour and equal keys for all: the sub-group reproduces the parent's ranks; then a
///     collective on the parent still works;
///  8. *send/recv* (skipped when P = 1: a group of one has no peer), each rank r sending to
///     (r + 1) mod P and receiving from (r − 1 + P) mod P:
///     (a) 100000 bytes on tag 11, even ranks sending first and odd ranks receiving first (so it
///     needs no buffering in the transport), bytes checked;
///     (b) small messages (≤ 64 bytes) on two tags: first tag 1 (5 + r bytes), then tag 2
///     (9 bytes), then tag 1 again (13 bytes), then tag 3 (0 bytes); the receiver takes tag 2
///     first, then tag 1 twice (they must come in the order sent), then tag 3. This assumes a
///     send of a small message completes before the matching receive is posted (true of the
///     in-process mailboxes, MPI eager sends and TCP sockets; the concept does not say it);
///  9. *poll* (only for a `dho2::polling_transport` that `can_poll`, and P ≥ 2; same ring):
///     before anything is sent on tag 21, `poll(prev, 21)` is false; after a barrier each rank
///     sends 64 bytes on tag 21, and the receiver polls until it sees them
///     (`dho2::wait_for_message`), polls again (still true: nothing consumed), receives the
///     bytes intact, and then polls false (before a barrier: once a peer has left the group,
///     `poll` may throw); then 100000 bytes on tag 22 with even ranks sending
///     first, the receiver polling until they arrive.
///
/// A `dho2::transport_error` (or any exception) thrown by the transport stops the run on that
/// rank and is reported as a failure naming the check; a conforming transport throws on every
/// rank, so every rank stops.
#pragma once

#include <dho2/concepts/polling_transport.hpp>
#include <dho2/core/types.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2::testing {

namespace detail {

class conformance_log {
 public:
  conformance_log(int rank, int size) : rank_(rank), size_(size) {}
  void section(std::string name) { section_ = std::move(name); }
  [[nodiscard]] const std::string& section() const noexcept { return section_; }
  void fail(const std::string& what) {
    failures_.push_back("[rank " + std::to_string(rank_) + " of " + std::to_string(size_) + "] " +
                        section_ + ": " + what);
  }
  void expect(bool ok, const std::string& what) {
    if (!ok) fail(what);
  }
  [[nodiscard]] std::vector<std::string> take() { return std::move(failures_); }

 private:
  int rank_;
  int size_;
  std::string section_;
  std::vector<std::string> failures_;
};

template <class V>
std::string conformance_str(const V& v) {
  std::ostringstream os;
  os.precision(std::numeric_limits<double>::max_digits10);
  os << v;
  return os.str();
}

inline std::size_t conformance_sz(index v) noexcept { return static_cast<std::size_t>(v); }

// value(r, i) of the closed-form checks.
inline double conformance_value(int r, std::size_t i) noexcept {
  return 1000.0 * r + static_cast<double>(i % (std::size_t{1} << 17)) + 0.25;
}

// A pseudo-random value in [-1, 1) using every mantissa bit (splitmix64 of (r, i)).
inline double conformance_noise(int r, std::size_t i) noexcept {
  std::uint64_t z = (static_cast<std::uint64_t>(r) << 40) ^ i;
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-52 - 1.0;
}

template <class E>
std::uint64_t conformance_hash(std::span<const E> values) noexcept {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a over the bytes
  for (const E v : values) {
    const auto bits =
        std::bit_cast<std::conditional_t<sizeof(E) == 4, std::uint32_t, std::uint64_t>>(v);
    for (std::size_t b = 0; b < sizeof(E); ++b) {
      h ^= (static_cast<std::uint64_t>(bits) >> (8 * b)) & 0xffU;
      h *= 1099511628211ULL;
    }
  }
  return h;
}

template <class E>
const char* conformance_type() noexcept {
  return sizeof(E) == 4 ? "float" : "double";
}

// A vector with `guard` sentinels either side of a span of `n` elements.
template <class E>
class guarded {
 public:
  static constexpr std::size_t guard = 4;
  static constexpr E sentinel = static_cast<E>(-7777.5);
  explicit guarded(std::size_t n, E fill = sentinel) : data_(n + 2 * guard, sentinel), n_(n) {
    std::fill_n(data_.begin() + guard, n, fill);
  }
  std::span<E> span() noexcept { return std::span<E>(data_).subspan(guard, n_); }
  [[nodiscard]] bool guards_intact() const noexcept {
    for (std::size_t k = 0; k < guard; ++k) {
      if (!(data_[k] == sentinel) || !(data_[guard + n_ + k] == sentinel)) return false;
    }
    return true;
  }

 private:
  std::vector<E> data_;
  std::size_t n_;
};

// Compares `found` with `expected(i)`; records the first mismatch and the number of others.
template <class E, class Expected>
void conformance_compare(conformance_log& log, std::span<const E> found, Expected expected,
                         double rel_tol, const std::string& what) {
  std::size_t bad = 0;
  std::string first;
  for (std::size_t i = 0; i < found.size(); ++i) {
    const double want = expected(i);
    const double got = static_cast<double>(found[i]);
    const bool ok = rel_tol == 0.0 ? got == static_cast<double>(static_cast<E>(want))
                                   : std::abs(got - want) <= rel_tol * std::abs(want);
    if (!ok && bad++ == 0) {
      first = what + ": element " + std::to_string(i) + " expected " + conformance_str(want) +
              ", found " + conformance_str(got);
    }
  }
  if (bad > 0) {
    log.fail(first + (bad > 1 ? " (and " + std::to_string(bad - 1) + " more mismatches)" : ""));
  }
}

// Offsets from shard sizes.
inline std::vector<index> conformance_offsets(const std::vector<index>& sizes) {
  std::vector<index> offsets(sizes.size() + 1, 0);
  for (std::size_t r = 0; r < sizes.size(); ++r) offsets[r + 1] = offsets[r] + sizes[r];
  return offsets;
}

inline std::vector<index> conformance_even(index n, int p) {
  std::vector<index> sizes(static_cast<std::size_t>(p));
  for (int r = 0; r < p; ++r) sizes[static_cast<std::size_t>(r)] = n / p + (r < n % p ? 1 : 0);
  return conformance_offsets(sizes);
}

template <class T>
void conformance_identity(T& t, conformance_log& log) {
  log.section("identity");
  const int r = t.rank();
  const int p = t.size();
  log.expect(p >= 1 && r >= 0 && r < p, "expected 0 <= rank() < size(), found rank() = " +
                                            std::to_string(r) + ", size() = " + std::to_string(p));
  if (p < 1 || r < 0 || r >= p) return;
  const auto offsets = conformance_even(p, p);
  std::vector<double> ranks(static_cast<std::size_t>(p), -1.0);
  const double mine = r;
  t.all_gather(std::span<const double>(&mine, 1), std::span<double>(ranks),
               std::span<const index>(offsets));
  conformance_compare<double>(
      log, ranks, [](std::size_t i) { return static_cast<double>(i); }, 0.0,
      "all_gather of the ranks (distinct ranks 0..P-1)");
  double agree[2] = {1.0, static_cast<double>(p)};
  t.all_reduce_sum(std::span<double>(agree));
  log.expect(agree[0] == p && agree[1] == static_cast<double>(p) * p,
             "all_reduce_sum of {1, size()} expected {" + std::to_string(p) + ", " +
                 std::to_string(p * p) + "} (every rank has the same size()), found {" +
                 conformance_str(agree[0]) + ", " + conformance_str(agree[1]) + "}");
}

template <class E, class T>
void conformance_all_reduce(T& t, conformance_log& log) {
  const int r = t.rank();
  const int p = t.size();
  for (const std::size_t n :
       {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{100003}}) {
    const std::string what =
        std::string("all_reduce_sum<") + conformance_type<E>() + "> n=" + std::to_string(n);
    log.section(what);
    guarded<E> v(n);
    auto s = v.span();
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<E>(conformance_value(r, i));
    t.all_reduce_sum(s);
    const double pairs = 1000.0 * p * (p - 1) / 2.0;
    const auto expected = [&](std::size_t i) {
      return pairs + p * static_cast<double>(i % (std::size_t{1} << 17)) + p * 0.25;
    };
    const double largest = n == 0 ? 0.0 : expected(std::min<std::size_t>(n - 1, 131071));
    const double exact_below = std::ldexp(1.0, std::numeric_limits<E>::digits - 2);
    const double tol = largest < exact_below ? 0.0 : 2.0 * p * std::numeric_limits<E>::epsilon();
    conformance_compare<E>(log, s, expected, tol, "sum over ranks of 1000*r + i + 0.25");
    log.expect(v.guards_intact(), "wrote outside the span of " + std::to_string(n) + " elements");
  }
}

template <class E, class T>
void conformance_determinism(T& t, conformance_log& log) {
  const int r = t.rank();
  const int p = t.size();
  log.section(std::string("determinism all_reduce_sum<") + conformance_type<E>() + ">");
  const std::size_t n = 4099;
  std::vector<E> a(n);
  for (std::size_t i = 0; i < n; ++i) {
    a[i] = static_cast<E>(conformance_noise(r, i) * std::ldexp(1.0, r % 7 - 3));
  }
  std::vector<E> b = a;
  t.all_reduce_sum(std::span<E>(a));
  t.all_reduce_sum(std::span<E>(b));
  log.expect(a == b, "the same inputs gave different bits in two calls");
  std::vector<double> magnitude(n, 0.0);
  std::vector<double> exact(n, 0.0);
  for (int q = 0; q < p; ++q) {
    for (std::size_t i = 0; i < n; ++i) {
      const auto x =
          static_cast<double>(static_cast<E>(conformance_noise(q, i) * std::ldexp(1.0, q % 7 - 3)));
      exact[i] += x;
      magnitude[i] += std::abs(x);
    }
  }
  std::size_t far = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double err = std::abs(static_cast<double>(a[i]) - exact[i]);
    if (err > 4.0 * p * std::numeric_limits<E>::epsilon() * magnitude[i]) ++far;
  }
  log.expect(far == 0, std::to_string(far) + " of " + std::to_string(n) +
                           " sums differ from the exact sum by more than 4*P*eps*sum|x|");
  const std::uint64_t h = conformance_hash<E>(a);
  const double halves[2] = {static_cast<double>(h >> 32), static_cast<double>(h & 0xffffffffU)};
  std::vector<double> all(2 * static_cast<std::size_t>(p), -1.0);
  std::vector<index> offsets(static_cast<std::size_t>(p) + 1);
  for (std::size_t q = 0; q < offsets.size(); ++q) offsets[q] = static_cast<index>(2 * q);
  t.all_gather(std::span<const double>(halves), std::span<double>(all),
               std::span<const index>(offsets));
  for (int q = 0; q < p; ++q) {
    const auto k = 2 * static_cast<std::size_t>(q);
    log.expect(all[k] == halves[0] && all[k + 1] == halves[1],
               "rank " + std::to_string(q) + "'s result is not bit-identical to this rank's " +
                   "(hash " + conformance_str(all[k]) + ":" + conformance_str(all[k + 1]) + " vs " +
                   conformance_str(halves[0]) + ":" + conformance_str(halves[1]) + ")");
  }
}

template <class T>
std::vector<std::pair<std::string, std::vector<index>>> conformance_partitions(const T& t) {
  const int p = t.size();
  std::vector<index> uneven(static_cast<std::size_t>(p));
  std::vector<index> last(static_cast<std::size_t>(p), 0);
  for (int r = 0; r < p; ++r) uneven[static_cast<std::size_t>(r)] = r % 3 == 1 ? 0 : 3 + 17 * r;
  last.back() = 50;
  return {{"even n=1000", conformance_even(1000, p)},
          {"uneven with empty shards", conformance_offsets(uneven)},
          {"n=P/2 (fewer entries than ranks)", conformance_even(p / 2, p)},
          {"all on the last rank (n=50)", conformance_offsets(last)},
          {"even n=100003", conformance_even(100003, p)}};
}

template <class E, class T>
void conformance_shards(T& t, conformance_log& log) {
  const int r = t.rank();
  const int p = t.size();
  for (const auto& partition : conformance_partitions(t)) {
    const std::string& name = partition.first;
    const std::vector<index>& offsets = partition.second;
    const std::size_t n = conformance_sz(offsets.back());
    const std::size_t begin = conformance_sz(offsets[static_cast<std::size_t>(r)]);
    const std::size_t len = conformance_sz(offsets[static_cast<std::size_t>(r) + 1]) - begin;
    const std::span<const index> offs(offsets);
    const std::string type = std::string("<") + conformance_type<E>() + "> ";

    log.section("reduce_scatter_sum" + type + name);
    std::vector<E> in(n);
    for (std::size_t i = 0; i < n; ++i) in[i] = static_cast<E>(conformance_value(r, i));
    guarded<E> out(len);
    t.reduce_scatter_sum(std::span<const E>(in), out.span(), offs);
    conformance_compare<E>(
        log, std::span<const E>(out.span()),
        [&](std::size_t j) {
          double s = 0.0;
          for (int q = 0; q < p; ++q) s += conformance_value(q, begin + j);
          return s;
        },
        0.0,
        "this rank's shard [" + std::to_string(begin) + ", " + std::to_string(begin + len) +
            ") of the sum");
    log.expect(out.guards_intact(),
               "wrote outside out (" + std::to_string(len) + " elements, this rank's shard)");

    log.section("all_gather" + type + name);
    std::vector<E> shard(len);
    for (std::size_t j = 0; j < len; ++j) {
      shard[j] = static_cast<E>(conformance_value(r, begin + j));
    }
    guarded<E> full(n);
    t.all_gather(std::span<const E>(shard), full.span(), offs);
    conformance_compare<E>(
        log, std::span<const E>(full.span()),
        [&](std::size_t i) {
          int owner = 0;
          while (conformance_sz(offsets[static_cast<std::size_t>(owner) + 1]) <= i) ++owner;
          return conformance_value(owner, i);
        },
        0.0, "value(owner(i), i) gathered in rank order");
    log.expect(full.guards_intact(), "wrote outside out (" + std::to_string(n) + " elements)");
  }
}

inline std::byte conformance_byte(int a, std::size_t i, int b) noexcept {
  return static_cast<std::byte>(
      (37U * static_cast<unsigned>(a) + 11U * i + static_cast<unsigned>(b)) & 0xffU);
}

template <class T>
void conformance_broadcast(T& t, conformance_log& log) {
  const int r = t.rank();
  const int p = t.size();
  std::vector<int> roots{0};
  if (p > 1) roots.push_back(p - 1);
  for (const int root : roots) {
    for (const std::size_t n :
         {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{65537}}) {
      log.section("broadcast root=" + std::to_string(root) + " bytes=" + std::to_string(n));
      std::vector<std::byte> bytes(n);
      for (std::size_t i = 0; i < n; ++i) {
        bytes[i] = r == root ? conformance_byte(root, i, 5) : ~conformance_byte(root, i, 5);
      }
      t.broadcast(std::span<std::byte>(bytes), root);
      std::size_t bad = 0;
      std::size_t first = 0;
      for (std::size_t i = 0; i < n; ++i) {
        if (bytes[i] != conformance_byte(root, i, 5) && bad++ == 0) first = i;
      }
      if (bad > 0) {
        log.fail("byte " + std::to_string(first) + " expected " +
                 std::to_string(static_cast<unsigned>(conformance_byte(root, first, 5))) +
                 ", found " + std::to_string(static_cast<unsigned>(bytes[first])) + " (" +
                 std::to_string(bad) + " wrong bytes" + (r == root ? ", on the root" : "") + ")");
      }
    }
  }
}

template <class T>
void conformance_barrier(T& t, conformance_log& log) {
  log.section("barrier");
  t.barrier();
  t.barrier();
  double one = 1.0;
  t.all_reduce_sum(std::span<double>(&one, 1));
  log.expect(one == t.size(), "all_reduce_sum after two barriers expected " +
                                  std::to_string(t.size()) + ", found " + conformance_str(one));
}

// Checks a sub-group whose members, in sub-rank order, have parent ranks `members`.
template <class T>
void conformance_subgroup(T& sub, conformance_log& log, const std::vector<int>& members,
                          int parent_rank) {
  const auto size = static_cast<int>(members.size());
  const auto pos = std::find(members.begin(), members.end(), parent_rank) - members.begin();
  log.expect(sub.rank() == pos && sub.size() == size,
             "expected sub-rank " + std::to_string(pos) + " of sub-size " + std::to_string(size) +
                 ", found sub-rank " + std::to_string(sub.rank()) + " of sub-size " +
                 std::to_string(sub.size()));
  if (sub.size() != size || sub.rank() < 0 || sub.rank() >= size) return;
  double sum = parent_rank;
  sub.all_reduce_sum(std::span<double>(&sum, 1));
  double want = 0.0;
  for (const int m : members) want += m;
  log.expect(sum == want, "all_reduce_sum of the parent ranks in the sub-group expected " +
                              conformance_str(want) + ", found " + conformance_str(sum));
  const auto offsets = conformance_even(size, size);
  std::vector<double> gathered(members.size(), -1.0);
  const double mine = parent_rank;
  sub.all_gather(std::span<const double>(&mine, 1), std::span<double>(gathered),
                 std::span<const index>(offsets));
  conformance_compare<double>(
      log, gathered, [&](std::size_t j) { return static_cast<double>(members[j]); }, 0.0,
      "all_gather of the parent ranks in sub-rank order");
}

template <class T>
void conformance_split(T& t, conformance_log& log) {
  const int r = t.rank();
  const int p = t.size();
  const int color = r % 2;
  std::vector<int> same;
  for (int q = color; q < p; q += 2) same.push_back(q);
  {
    log.section("split(color = rank % 2, key = rank)");
    T sub = t.split(color, r);
    conformance_subgroup(sub, log, same, r);
  }
  {
    log.section("split(color = rank % 2, key = -rank)");
    T sub = t.split(color, -r);
    conformance_subgroup(sub, log, std::vector<int>(same.rbegin(), same.rend()), r);
  }
  {
    log.section("split(color = 0, key = 0)");
    T sub = t.split(0, 0);
    std::vector<int> all(static_cast<std::size_t>(p));
    for (int q = 0; q < p; ++q) all[static_cast<std::size_t>(q)] = q;
    conformance_subgroup(sub, log, all, r);
  }
  log.section("collective on the parent after split");
  double one = 1.0;
  t.all_reduce_sum(std::span<double>(&one, 1));
  log.expect(one == p, "expected " + std::to_string(p) + ", found " + conformance_str(one));
}

inline void conformance_check_message(conformance_log& log, const std::vector<std::byte>& got,
                                      int src, int tag, const std::string& what) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != conformance_byte(src, i, tag)) {
      log.fail(what + ": byte " + std::to_string(i) + " expected " +
               std::to_string(static_cast<unsigned>(conformance_byte(src, i, tag))) + ", found " +
               std::to_string(static_cast<unsigned>(got[i])) +
               " (wrong message, order or content)");
      return;
    }
  }
}

template <class T>
void conformance_send_recv(T& t, conformance_log& log) {
  const int r = t.rank();
  const int p = t.size();
  if (p < 2) return;
  const int next = (r + 1) % p;
  const int prev = (r - 1 + p) % p;
  const auto message = [](int src, std::size_t n, int tag) {
    std::vector<std::byte> m(n);
    for (std::size_t i = 0; i < n; ++i) m[i] = conformance_byte(src, i, tag);
    return m;
  };
  const auto send = [&](std::size_t n, int tag) {
    const auto m = message(r, n, tag);
    t.send(std::span<const std::byte>(m), next, tag);
  };
  const auto recv = [&](std::size_t n, int tag, const std::string& what) {
    std::vector<std::byte> got(n, std::byte{0x5a});
    t.recv(std::span<std::byte>(got), prev, tag);
    conformance_check_message(log, got, prev, tag, what);
  };

  log.section("send/recv ring, 100000 bytes, tag 11 (even ranks send first)");
  if (r % 2 == 0) {
    send(100000, 11);
    recv(100000, 11, "message from rank " + std::to_string(prev));
  } else {
    recv(100000, 11, "message from rank " + std::to_string(prev));
    send(100000, 11);
  }

  log.section("send/recv ring, small messages on tags 1, 2, 3 (received out of tag order)");
  send(5 + static_cast<std::size_t>(r), 1);
  send(9, 2);
  send(13, 1);
  send(0, 3);
  recv(9, 2, "tag 2 message");
  recv(5 + static_cast<std::size_t>(prev), 1, "first tag 1 message");
  recv(13, 1, "second tag 1 message (in order after the first)");
  recv(0, 3, "empty tag 3 message");
}

template <class T>
void conformance_poll(T& t, conformance_log& log) {
  if constexpr (polling_transport<T>) {
    const int r = t.rank();
    const int p = t.size();
    if (p < 2 || !can_poll(t)) return;
    const int next = (r + 1) % p;
    const int prev = (r - 1 + p) % p;
    const auto expect = [&](bool ok, const std::string& what) {
      if (!ok) log.fail(what);
    };
    log.section("poll before anything is sent on tag 21");
    expect(!t.poll(prev, 21), "poll(prev, 21) is true before any message was sent on tag 21");
    t.barrier();
    log.section("poll of 64 bytes on tag 21");
    std::vector<std::byte> m(64);
    for (std::size_t i = 0; i < m.size(); ++i) m[i] = conformance_byte(r, i, 21);
    t.send(std::span<const std::byte>(m), next, 21);
    wait_for_message(t, prev, 21);
    expect(t.poll(prev, 21), "poll(prev, 21) is false right after it was true (it consumed?)");
    std::vector<std::byte> got(64, std::byte{0x5a});
    t.recv(std::span<std::byte>(got), prev, 21);
    conformance_check_message(log, got, prev, 21, "tag 21 message after poll");
    expect(!t.poll(prev, 21), "poll(prev, 21) is true after its only message was received");
    t.barrier();  // (a peer that has left may make poll throw: nothing more can come from it)
    log.section("poll of 100000 bytes on tag 22 (even ranks send first)");
    std::vector<std::byte> big(100000);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = conformance_byte(r, i, 22);
    std::vector<std::byte> in(big.size(), std::byte{0x5a});
    const auto receive = [&] {
      wait_for_message(t, prev, 22);
      t.recv(std::span<std::byte>(in), prev, 22);
      conformance_check_message(log, in, prev, 22, "tag 22 message after poll");
    };
    if (r % 2 == 0) {
      t.send(std::span<const std::byte>(big), next, 22);
      receive();
    } else {
      receive();
      t.send(std::span<const std::byte>(big), next, 22);
    }
  } else {
    static_cast<void>(t);
    static_cast<void>(log);
  }
}

}  // namespace detail

/// Runs every check of the file comment on this rank of `t`'s group and returns the failures
/// ("[rank r of P] <check>: <what was expected, what was found>"); empty when `t` conforms.
/// Every rank of the group must call it concurrently (it is a sequence of collectives).
template <dho2::transport T>
std::vector<std::string> transport_conformance(T& t) {
  detail::conformance_log log(t.rank(), t.size());
  try {
    detail::conformance_identity(t, log);
    if (t.size() < 1 || t.rank() < 0 || t.rank() >= t.size()) return log.take();
    detail::conformance_all_reduce<float>(t, log);
    detail::conformance_all_reduce<double>(t, log);
    detail::conformance_determinism<float>(t, log);
    detail::conformance_determinism<double>(t, log);
    detail::conformance_shards<float>(t, log);
    detail::conformance_shards<double>(t, log);
    detail::conformance_broadcast(t, log);
    detail::conformance_barrier(t, log);
    detail::conformance_split(t, log);
    detail::conformance_send_recv(t, log);
    detail::conformance_poll(t, log);
  } catch (const std::exception& e) {
    log.fail(std::string("stopped: the transport threw: ") + e.what());
  } catch (...) {
    log.fail("stopped: the transport threw a non-standard exception");
  }
  return log.take();
}

}  // namespace dho2::testing
