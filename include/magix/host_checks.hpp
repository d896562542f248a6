// Up-front checks for runs over several hosts: every rank must see the same checkpoint folder
// and the same data files (docs/multihost.md). Both are collectives over mesh.world(), cheap, and
// do nothing on a world of one.
#pragma once

#include <string>

#include "magix/mesh.hpp"

namespace magix {

// Rank 0 writes a probe file holding a random token into `dir` (created if missing); every rank
// reads it back. Throws on every rank, naming the hosts that do not see the probe (or see other
// contents), when `dir` is not one folder shared by all hosts. `flag` names the folder's option in
// the message ("--checkpoint_dir"). The probe file is removed before returning.
void check_shared_folder(const Mesh& mesh, const std::string& dir, const std::string& flag);

// Every rank fingerprints `path`: its size and the XXH3-64 of its first and last MiB (of all of
// it when it is at most 2 MiB). Throws on every rank, naming the hosts whose fingerprint differs
// from rank 0's or that cannot read the file. A file that differs only in its middle (same size,
// same first and last MiB) is not caught. Only a path that is one regular file on world rank 0 is
// checked: folders, globs, lists and hub dataset names (docs/data.md) are not fingerprinted yet.
void check_same_file(const Mesh& mesh, const std::string& path, const std::string& flag);

}  // namespace magix
