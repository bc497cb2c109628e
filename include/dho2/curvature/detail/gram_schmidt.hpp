// The passes of classical Gram–Schmidt over a Lanczos basis shard Q (rows: the shard; columns:
// q₀ … q_{c−1}), for a basis stored in double or in float. Arithmetic is in double: a float
// basis is converted block by block into a small double buffer that stays in cache, so Q is
// read from memory once per pass in its own precision.
#pragma once

#include <dho2/detail/internal_header_check.hpp>

#include <dho2/core/types.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <type_traits>
#include <utility>

namespace dho2::detail {

template <class B>
using basis_matrix = Eigen::Matrix<B, Eigen::Dynamic, Eigen::Dynamic>;

// Rows per block: about 128 KiB of the block's `cols` columns in double, at least 16 rows.
inline index gram_schmidt_block_rows(index cols) {
  constexpr index block_doubles = 16384;
  return std::max<index>(16, block_doubles / std::max<index>(cols, 1));
}

// Calls f(first_row, rows, block) for row blocks of the first `cols` columns of q; `block` is a
// double matrix expression of those rows (q's own rows for a double basis; for a float basis,
// their conversion in `buffer`, which grows only when a block outgrows it).
template <class B, class F>
void for_each_row_block(const basis_matrix<B>& q, index cols, Eigen::VectorXd& buffer, F&& f) {
  const index n = q.rows();
  const index rows = gram_schmidt_block_rows(cols);
  if constexpr (!std::is_same_v<B, double>) {
    const index need = std::min(rows, n) * cols;
    if (buffer.size() < need) buffer.resize(std::max<index>(need, 16384));
  }
  for (index r = 0; r < n; r += rows) {
    const index len = std::min(rows, n - r);
    if constexpr (std::is_same_v<B, double>) {
      f(r, len, q.block(r, 0, len, cols));
    } else {
      Eigen::Map<Eigen::MatrixXd> b(buffer.data(), len, cols);
      b = q.block(r, 0, len, cols).template cast<double>();
      f(r, len, std::as_const(b));
    }
  }
}

// h = Qᵀw (this shard's partial sums), Q the first h.size() columns.
template <class B>
void project(const basis_matrix<B>& q, const Eigen::VectorXd& w, Eigen::Ref<Eigen::VectorXd> h,
             Eigen::VectorXd& buffer) {
  const index cols = h.size();
  if constexpr (std::is_same_v<B, double>) {
    h.noalias() = q.leftCols(cols).transpose() * w;
  } else {
    h.setZero();
    for_each_row_block<B>(q, cols, buffer, [&](index r, index len, const auto& block) {
      h.noalias() += block.transpose() * w.segment(r, len);
    });
  }
}

// w −= Q h, Q the first h.size() columns.
template <class B>
void subtract(const basis_matrix<B>& q, Eigen::Ref<const Eigen::VectorXd> h, Eigen::VectorXd& w,
              Eigen::VectorXd& buffer) {
  const index cols = h.size();
  if constexpr (std::is_same_v<B, double>) {
    w.noalias() -= q.leftCols(cols) * h;
  } else {
    for_each_row_block<B>(q, cols, buffer, [&](index r, index len, const auto& block) {
      w.segment(r, len).noalias() -= block * h;
    });
  }
}

// w −= Q h, then h_next = Qᵀw (partial sums); returns ‖w‖² (partial). One read of Q: each row
// block serves both products while it is in cache.
template <class B>
double subtract_project(const basis_matrix<B>& q, Eigen::Ref<const Eigen::VectorXd> h,
                        Eigen::VectorXd& w, Eigen::Ref<Eigen::VectorXd> h_next,
                        Eigen::VectorXd& buffer) {
  const index cols = h.size();
  h_next.setZero();
  double norm2 = 0.0;
  for_each_row_block<B>(q, cols, buffer, [&](index r, index len, const auto& block) {
    auto wb = w.segment(r, len);
    wb.noalias() -= block * h;
    h_next.noalias() += block.transpose() * wb;
    norm2 += wb.squaredNorm();
  });
  return norm2;
}

// out = Yᵀ Qᵀ (rows: Ritz vectors on this shard), Q the first y.rows() columns.
template <class B>
void ritz_vectors(const basis_matrix<B>& q, const Eigen::MatrixXd& y, Eigen::MatrixXd& out,
                  Eigen::VectorXd& buffer) {
  const index cols = y.rows();
  out.resize(y.cols(), q.rows());
  if constexpr (std::is_same_v<B, double>) {
    out.noalias() = y.transpose() * q.leftCols(cols).transpose();
  } else {
    for_each_row_block<B>(q, cols, buffer, [&](index r, index len, const auto& block) {
      out.middleCols(r, len).noalias() = y.transpose() * block.transpose();
    });
  }
}

}  // namespace dho2::detail
