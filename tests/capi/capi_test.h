/* Helpers of the C API's tests (written in C11, as a C user would): a tiny
 * assertion macro, scratch files, the corpus, SHA-256, running the CLI. */
#ifndef VHDX_TESTS_CAPI_TEST_H_
#define VHDX_TESTS_CAPI_TEST_H_

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "vhdx/vhdx.h"

/* ctest's SKIP_RETURN_CODE for these tests. */
#define CAPI_SKIP 77

/* Fails the test at file:line with the library's last message. */
#define CHECK(cond)                                                                                  \
  do {                                                                                               \
    if (!(cond)) capi_fail(__FILE__, __LINE__, #cond, vhdx_last_error());                           \
  } while (0)

/* `expr` (a vhdx_status) must be `want`. */
#define CHECK_STATUS(expr, want)                                                                     \
  do {                                                                                               \
    vhdx_status capi_st_ = (expr);                                                                   \
    if (capi_st_ != (want)) capi_fail_status(__FILE__, __LINE__, #expr, capi_st_, (want));          \
  } while (0)
#define CHECK_OK(expr) CHECK_STATUS(expr, VHDX_OK)

void capi_fail(const char* file, int line, const char* what, const char* detail);
void capi_fail_status(const char* file, int line, const char* what, vhdx_status got, vhdx_status want);

/* A scratch directory for this process, removed at exit. */
const char* capi_scratch_dir(void);
/* "<scratch>/<leaf>" in a static rotating buffer (good for a few calls). */
const char* capi_scratch(const char* leaf);

/* The corpus folder ($VHDX_CORPUS, else the one beside the source tree).
 * When it is missing: exits with CAPI_SKIP, or fails under $VHDX_STRICT. */
const char* capi_corpus_or_skip(void);
/* Decompresses corpus file `name` (.gz or .bz2) into the scratch dir as
 * `leaf`; returns its path (static rotating buffer). */
const char* capi_corpus_image(const char* name, const char* leaf);

/* Lowercase hex SHA-256 (65 bytes with the NUL). */
void capi_sha256_of_image(const vhdx_image* image, char out[65]);
void capi_sha256_of_file(const char* path, char out[65]);

/* Runs a shell command, returns its stdout (malloc'd, free it) and sets
 * *exit_code. */
char* capi_run(const char* command, int* exit_code);
/* The vhdx CLI built with the tests. */
const char* capi_cli(void);

/* Fills `buf` with bytes that depend on `seed` and their position. */
void capi_pattern(void* buf, size_t n, uint64_t seed, uint64_t offset);
int capi_all_zero(const void* buf, size_t n);
int capi_file_exists(const char* path);
uint64_t capi_file_size(const char* path);
/* Copies a file byte for byte. */
void capi_copy_file(const char* from, const char* to);
/* Overwrites `n` bytes at `offset` of a file with `byte`. */
void capi_damage(const char* path, uint64_t offset, size_t n, unsigned char byte);

#endif
