// VHDX_API marks what the shared libvhdx exports. The library is built with
// hidden visibility, so a symbol without it (anything in src/) stays inside
// the library: its users can rely only on the public headers, and the ABI
// is what these headers declare. Harmless in the static library and in
// users' code, where it only restates the default.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define VHDX_API __attribute__((visibility("default")))
#else
#define VHDX_API
#endif
