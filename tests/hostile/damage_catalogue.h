// One damaged variant per validation rule of digest §9 (and §7.4 for the
// log), each with what a correct reader must do about it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "hostile/hostile_image.h"

namespace vhdx::hostile {

enum class Expect {
  kReject,      // open, map or read fails cleanly; Check reports an error
  kAcceptSame,  // opens and reads exactly as the undamaged image; Check finds no error
  kEither,      // either a clean error or the undamaged content
  kCheckOnly,   // reads may succeed with other content (cost of detecting it on every read
                // is a full BAT scan), but Check must report an error
};

struct Damage {
  std::string name;
  Expect expect;
  std::function<void(Bytes&, const Layout&)> apply;
  // Whether the damage makes sense for an image; null = every image.
  std::function<bool(const Layout&)> applies;
};

std::vector<Damage> DamageCatalogue();

}  // namespace vhdx::hostile
