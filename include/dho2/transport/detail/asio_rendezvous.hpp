// Rendezvous of dho2::asio_transport: rank 0 accepts and authenticates every other rank, checks
// its hello and sends everyone the table (session token, listening addresses); the other ranks
// connect to rank 0, say hello, wait for the table and build the mesh. Also the mesh of a group
// made by split. Every step fails the mesh (abort frames, close) with a "rendezvous" or "split"
// message. Hello, table and split records: docs/asio_wire_protocol.md.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/errors.hpp>
#include <dho2/transport/detail/asio_frame.hpp>
#include <dho2/transport/detail/asio_io.hpp>
#include <dho2/transport/detail/asio_mesh.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace dho2::detail {

// The options every rank must share, hashed (the hello carries it; rank 0 compares).
inline std::uint32_t asio_fingerprint(const asio_settings& s) noexcept {
  return static_cast<std::uint32_t>(
      asio_mix(asio_mix(s.max_frame_bytes) ^ s.direct_all_reduce_bytes) & 0xFFFFFFFFU);
}

// The address of `family` (4 or 6) in the 16 bytes `raw` (an IPv4 address in the first 4).
inline asio_net::ip::address asio_to_address(std::uint8_t family,
                                             const std::array<unsigned char, 16>& raw) {
  if (family == 4) {
    return asio_net::ip::address_v4(
        asio_net::ip::address_v4::bytes_type{raw[0], raw[1], raw[2], raw[3]});
  }
  asio_net::ip::address_v6::bytes_type b{};
  std::copy(raw.begin(), raw.end(), b.begin());
  return asio_net::ip::address_v6(b);
}

// `a` as the family (4 or 6) and 16 bytes of a hello or table entry.
inline std::uint8_t asio_from_address(const asio_net::ip::address& a,
                                      std::array<unsigned char, 16>& raw) {
  if (a.is_v4()) {
    const auto b = a.to_v4().to_bytes();
    std::copy(b.begin(), b.end(), raw.begin());
    return 4;
  }
  const auto b = a.to_v6().to_bytes();
  std::copy(b.begin(), b.end(), raw.begin());
  return 6;
}

// Rank 0: listens on `port`, admits ranks 1..P−1 until connect_timeout (refusing strangers),
// checks their hellos and sends them the table.
inline void asio_rendezvous_root(asio_mesh& m, unsigned short port) {
  const int size = m.size();
  const asio_settings& settings = m.settings();
  try {
    m.open_acceptor(port);
    const auto deadline = asio_clock::now() + settings.connect_timeout;
    std::vector<std::array<unsigned char, 16>> raw(static_cast<std::size_t>(size));
    std::vector<std::uint8_t> family(static_cast<std::size_t>(size), 0);
    std::vector<unsigned short> ports(static_cast<std::size_t>(size), 0);
    // Handshakes and hellos run concurrently (asio_mesh::admit_all): a connection that stalls
    // holds up no other. An authenticated hello that disagrees fails the job.
    const auto on_seated = [&](int rank, std::span<const unsigned char> bytes) {
      std::array<unsigned char, asio_wire::hello_size> buf{};
      std::copy(bytes.begin(), bytes.end(), buf.begin());
      const asio_wire::hello h = asio_wire::decode_hello(buf);
      asio_link& l = m.link(rank);
      if (const std::string why =
              asio_wire::hello_defect(h, static_cast<std::uint32_t>(rank),
                                      static_cast<std::uint32_t>(size), asio_fingerprint(settings));
          !why.empty()) {
        m.fail(m.prefix("rendezvous") + ": connection from " + l.remote() + ": " + why);
      }
      const auto r = static_cast<std::size_t>(rank);
      raw[r] = h.address;
      family[r] = h.family;
      ports[r] = h.port;
      if (h.family == 0) {
        family[r] = asio_from_address(l.socket().remote_endpoint().address(), raw[r]);
      }
      m.set_address(rank, asio_to_address(family[r], raw[r]));
    };
    const int joined = m.admit_all(size - 1, deadline, true, on_seated);
    if (joined < size - 1) {
      std::vector<int> missing;
      for (int r = 1; r < size; ++r) {
        if (!m.has_link(r)) missing.push_back(r);
      }
      throw asio_defect(
          "only " + std::to_string(joined) + " of " + std::to_string(size - 1) +
          " ranks joined within connect_timeout = " + asio_seconds(settings.connect_timeout) +
          " (missing: " + asio_mesh::rank_list(missing) + ")" + m.refusal_summary());
    }
    m.close_acceptor();
    std::random_device rd;
    m.set_token(asio_mix((std::uint64_t{rd()} << 32) ^ rd() ^
                         static_cast<std::uint64_t>(asio_clock::now().time_since_epoch().count())));
    asio_wire::table t;
    t.token = m.token();
    t.entries.resize(static_cast<std::size_t>(size));
    for (std::size_t r = 1; r < static_cast<std::size_t>(size); ++r) {
      t.entries[r] = {ports[r], family[r], raw[r]};
    }
    const std::vector<unsigned char> table = asio_wire::encode_table(t);
    std::vector<asio_write> writes;
    asio_wire::header h;
    h.type = asio_wire::kind::table;
    for (int r = 1; r < size; ++r) {
      writes.push_back(m.make_write(r, h, std::as_bytes(std::span(table))));
      writes.back().counted = false;
    }
    m.exchange("rendezvous", {}, writes);
  } catch (const transport_error&) {
    throw;
  } catch (const std::exception& e) {
    m.fail(m.prefix("rendezvous") + ": " + e.what());
  }
}

// Ranks > 0: listen on an ephemeral port, connect to rank 0 at `host`:`port`, authenticate, say
// hello, wait for the table, then build the mesh with ranks 1..P−1.
inline void asio_rendezvous_member(asio_mesh& m, const std::string& host, unsigned short port) {
  const int size = m.size();
  const asio_settings& settings = m.settings();
  try {
    m.open_acceptor(0);
    asio_wire::hello h;
    h.rank = static_cast<std::uint32_t>(m.rank());
    h.size = static_cast<std::uint32_t>(size);
    h.port = m.listen_endpoint().port();
    h.little_endian = std::endian::native == std::endian::little ? 1 : 0;
    h.options = asio_fingerprint(settings);
    const auto bound = m.listen_endpoint().address();
    if (!bound.is_unspecified()) h.family = asio_from_address(bound, h.address);
    asio_tcp::resolver resolver(m.io().context());
    std::vector<asio_tcp::endpoint> eps;
    for (const auto& e :
         resolver.resolve(host, std::to_string(port), asio_tcp::resolver::numeric_service)) {
      eps.push_back(e.endpoint());
    }
    if (eps.empty()) throw asio_defect("cannot resolve rendezvous host " + host);
    const auto deadline = asio_clock::now() + settings.connect_timeout;
    auto root = m.connect_until(eps, deadline, true);
    root->set_name("peer 0 (" + root->remote() + ")");
    m.adopt(0, std::move(root));
    m.set_address(0, m.link(0).socket().remote_endpoint().address());
    // Rank 0 answers at once (its handshakes run concurrently), but may still be starting up.
    m.connect_peer(0, settings.connect_timeout + settings.timeout);
    const auto hello_bytes = asio_wire::encode_hello(h);
    asio_wire::header hh;
    hh.type = asio_wire::kind::hello;
    asio_write w = m.make_write(0, hh, std::as_bytes(std::span(hello_bytes)));
    w.counted = false;
    std::vector<unsigned char> table(asio_wire::table_size(static_cast<std::size_t>(size)));
    asio_wire::header want;
    want.type = asio_wire::kind::table;
    // Rank 0 answers once every rank has joined, or tells why not: wait up to
    // connect_timeout + timeout (rank 0's own deadline may have started later than ours).
    asio_read rd =
        asio_io::handshake_read(m.link(0), want, std::as_writable_bytes(std::span(table)),
                                settings.connect_timeout + settings.timeout);
    m.exchange("rendezvous", std::span(&rd, 1), std::span(&w, 1));
    const asio_wire::table t = asio_wire::decode_table(table).value();  // the length was checked
    m.set_token(t.token);
    std::vector<unsigned short> ports(static_cast<std::size_t>(size), 0);
    for (std::size_t r = 1; r < static_cast<std::size_t>(size); ++r) {
      const asio_wire::table_entry& e = t.entries[r];
      if (!asio_wire::usable(e)) {
        throw asio_defect(m.link(0).name() + ": malformed table entry for rank " +
                          std::to_string(r));
      }
      ports[r] = e.port;
      m.set_address(static_cast<int>(r), asio_to_address(e.family, e.address));
    }
    m.build_mesh(ports, 1);
  } catch (const transport_error&) {
    throw;
  } catch (const std::exception& e) {
    m.fail(m.prefix("rendezvous") + ": " + e.what());
  }
}

// The mesh `child` of this rank's sub-group `color` of `parent`, whose split records (one per
// parent rank, by rank) are `records`; `child` listens already. A failure fails both.
inline void asio_split_mesh(asio_mesh& parent, asio_mesh& child,
                            std::span<const unsigned char> records, int color) {
  const std::vector<asio_wire::split_member> members =
      asio_wire::split_group(records, static_cast<std::int32_t>(color));
  int me = 0;
  for (std::size_t i = 0; i < members.size(); ++i) {
    if (members[i].rank == parent.rank()) me = static_cast<int>(i);
  }
  child.regroup(me, static_cast<int>(members.size()));
  std::vector<unsigned short> ports(members.size());
  for (std::size_t i = 0; i < members.size(); ++i) {
    child.set_address(static_cast<int>(i), parent.address(members[i].rank));
    ports[i] = members[i].port;
  }
  child.set_token(parent.split_token(color));
  try {
    if (child.size() > 1) {
      try {
        child.build_mesh(ports, 0);
      } catch (const transport_error&) {
        throw;
      } catch (const std::exception& ex) {
        child.fail(child.prefix("split") + ": " + ex.what());
      }
    } else {
      child.close_acceptor();
    }
  } catch (const transport_error& ex) {
    parent.fail(parent.prefix("split") +
                ": building the sub-group's connections failed: " + ex.what());
  }
}

}  // namespace dho2::detail
