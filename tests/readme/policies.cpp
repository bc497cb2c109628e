// Context of the README's policy-bundle fragment: the options and a rank handle of an in-process
// transport (a world of one rank); the fragment composes the optimizer type and constructs it.
#include <dho2/dho2.hpp>
#include <dho2/transport/inproc.hpp>

int main() {
  dho2::options opts;
  opts.k = 4;
  const dho2::inproc_world world(1);
  dho2::inproc_transport rank_handle(world, 0);
  // README-BLOCK
  return opt.get_options().k == 4 ? 0 : 1;
}
