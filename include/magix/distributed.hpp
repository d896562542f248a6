// The process world and the device mesh over it.
//
// One process per device (SPMD). A process started by a launcher (mpirun, srun) joins the MPI
// world; a process started alone is a world of one and needs no MPI at all.
#pragma once

#include <string>
#include <vector>

#include "magix/mesh.hpp"

namespace magix {

// Owns the MPI world for the life of the program (create one, in main, before any mesh).
class Runtime {
 public:
  Runtime(int* argc, char*** argv);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  int world_rank() const { return rank_; }
  int world_size() const { return size_; }
  bool uses_mpi() const { return mpi_; }

  // Stops every rank: prints `message` prefixed with this rank, then aborts the world
  // (MPI_Abort) so that no peer is left waiting in a collective. For the CLI's error path.
  [[noreturn]] void abort(const std::string& message, int code = 1);

 private:
  int rank_ = 0;
  int size_ = 1;
  bool mpi_ = false;
};

// True when this process was started by an MPI launcher (mpirun / srun with PMI).
bool launched_by_mpi();

// This process's index among the world's ranks on its node: the launcher's variable
// (local_rank_from_env: OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, ...), else its rank in
// MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) of the world; 0 without MPI. Collective over the
// world when it falls back to MPI.
int local_rank();

// This rank's host as MPI names it (MPI_Get_processor_name), or the host name without MPI.
std::string processor_name();

// Arranges the world's ranks in a (data, model) grid, model axis fastest: world rank
// r = data_rank * M + model_rank. One entry may be -1 (inferred). `names` must be
// {"data", "model"}. Without a Runtime using MPI the world is this process alone.
Mesh create_device_mesh(std::vector<int> shape,
                        const std::vector<std::string>& names = {"data", "model"});

}  // namespace magix
