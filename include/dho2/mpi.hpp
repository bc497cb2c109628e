/// @file
/// The opt-in umbrella header of the MPI transport: the core library (`<dho2/dho2.hpp>`) plus
/// `dho2::mpi_transport` (`<dho2/transport/mpi.hpp>`). Needs Boost.MPI (1.74 or later) and an MPI
/// library: link `dho2::mpi`. MPI must be initialised by the program (e.g. a
/// `boost::mpi::environment` in `main`) before a transport is constructed.
#pragma once

#include <dho2/dho2.hpp>
#include <dho2/transport/mpi.hpp>
