/* POSIX 2008 for mkdtemp, popen, fileno: the tests build with -std=c11. */
#define _POSIX_C_SOURCE 200809L

#include "capi_test.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void capi_fail(const char* file, int line, const char* what, const char* detail) {
  fprintf(stderr, "%s:%d: CHECK failed: %s\n  last error: %s\n", file, line, what, detail ? detail : "(none)");
  exit(1);
}

void capi_fail_status(const char* file, int line, const char* what, vhdx_status got, vhdx_status want) {
  fprintf(stderr, "%s:%d: %s returned %s, expected %s\n  last error: %s\n", file, line, what, vhdx_status_name(got),
          vhdx_status_name(want), vhdx_last_error());
  exit(1);
}

static char scratch_dir[512];

static void remove_scratch(void) {
  if (!scratch_dir[0]) return;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", scratch_dir);
}

const char* capi_scratch_dir(void) {
  if (!scratch_dir[0]) {
    const char* tmp = getenv("TMPDIR");
    snprintf(scratch_dir, sizeof scratch_dir, "%s/vhdx-capi-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(scratch_dir)) capi_fail(__FILE__, __LINE__, "mkdtemp", scratch_dir);
    atexit(remove_scratch);
  }
  return scratch_dir;
}

const char* capi_scratch(const char* leaf) {
  static char bufs[8][600];
  static int next;
  char* b = bufs[next++ % 8];
  snprintf(b, sizeof bufs[0], "%s/%s", capi_scratch_dir(), leaf);
  return b;
}

const char* capi_corpus_or_skip(void) {
  const char* dir = getenv("VHDX_CORPUS");
  if (!dir || !*dir) dir = VHDX_DEFAULT_CORPUS;
  char manifest[600];
  snprintf(manifest, sizeof manifest, "%s/MANIFEST.md", dir);
  if (capi_file_exists(manifest)) return dir;
  const char* strict = getenv("VHDX_STRICT");
  if (strict && *strict && strcmp(strict, "0") != 0) {
    fprintf(stderr, "FAIL: the corpus is missing (%s) and VHDX_STRICT is set\n", dir);
    exit(1);
  }
  printf("SKIP: the corpus is missing (%s); set VHDX_CORPUS\n", dir);
  exit(CAPI_SKIP);
}

const char* capi_corpus_image(const char* name, const char* leaf) {
  const char* dir = capi_corpus_or_skip();
  const char* out = capi_scratch(leaf);
  const size_t len = strlen(name);
  const char* tool = len > 3 && strcmp(name + len - 3, ".gz") == 0 ? "gzip" : "bzip2";
  char cmd[1600];
  snprintf(cmd, sizeof cmd, "%s -dc '%s/%s' > '%s'", tool, dir, name, out);
  if (system(cmd) != 0) capi_fail(__FILE__, __LINE__, "decompress corpus image", cmd);
  return out;
}

static void hex(const unsigned char* digest, char out[65]) {
  for (int i = 0; i < 32; ++i) snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

void capi_sha256_of_image(const vhdx_image* image, char out[65]) {
  vhdx_info info;
  CHECK_OK(vhdx_get_info(image, &info));
  enum { kChunk = 1 << 20 };
  unsigned char* buf = malloc(kChunk);
  CHECK(buf != NULL);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  CHECK(ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
  for (uint64_t off = 0; off < info.virtual_size; off += kChunk) {
    size_t n = info.virtual_size - off < kChunk ? (size_t)(info.virtual_size - off) : kChunk;
    CHECK_OK(vhdx_read(image, off, buf, n));
    CHECK(EVP_DigestUpdate(ctx, buf, n) == 1);
  }
  unsigned char digest[32];
  unsigned int dlen = 0;
  CHECK(EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 && dlen == 32);
  EVP_MD_CTX_free(ctx);
  free(buf);
  hex(digest, out);
}

void capi_sha256_of_file(const char* path, char out[65]) {
  FILE* f = fopen(path, "rb");
  CHECK(f != NULL);
  enum { kChunk = 1 << 20 };
  unsigned char* buf = malloc(kChunk);
  CHECK(buf != NULL);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  CHECK(ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
  size_t n;
  while ((n = fread(buf, 1, kChunk, f)) > 0) CHECK(EVP_DigestUpdate(ctx, buf, n) == 1);
  CHECK(!ferror(f));
  fclose(f);
  unsigned char digest[32];
  unsigned int dlen = 0;
  CHECK(EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 && dlen == 32);
  EVP_MD_CTX_free(ctx);
  free(buf);
  hex(digest, out);
}

char* capi_run(const char* command, int* exit_code) {
  FILE* p = popen(command, "r");
  CHECK(p != NULL);
  size_t cap = 4096, len = 0;
  char* out = malloc(cap);
  CHECK(out != NULL);
  size_t n;
  while ((n = fread(out + len, 1, cap - len - 1, p)) > 0) {
    len += n;
    if (cap - len - 1 == 0) {
      cap *= 2;
      out = realloc(out, cap);
      CHECK(out != NULL);
    }
  }
  out[len] = '\0';
  int st = pclose(p);
  *exit_code = st == -1 ? -1 : (st >> 8) & 0xff;
  return out;
}

const char* capi_cli(void) { return VHDX_CLI_PATH; }

void capi_pattern(void* buf, size_t n, uint64_t seed, uint64_t offset) {
  unsigned char* p = buf;
  for (size_t i = 0; i < n; ++i) {
    uint64_t x = (offset + i) * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    p[i] = (unsigned char)(x | 1);  // never zero: a zero byte would hide a lost write
  }
}

int capi_all_zero(const void* buf, size_t n) {
  const unsigned char* p = buf;
  for (size_t i = 0; i < n; ++i)
    if (p[i]) return 0;
  return 1;
}

int capi_file_exists(const char* path) {
  struct stat st;
  return stat(path, &st) == 0;
}

uint64_t capi_file_size(const char* path) {
  struct stat st;
  CHECK(stat(path, &st) == 0);
  return (uint64_t)st.st_size;
}

void capi_copy_file(const char* from, const char* to) {
  char cmd[1300];
  snprintf(cmd, sizeof cmd, "cp --sparse=always '%s' '%s'", from, to);
  CHECK(system(cmd) == 0);
}

void capi_damage(const char* path, uint64_t offset, size_t n, unsigned char byte) {
  FILE* f = fopen(path, "r+b");
  CHECK(f != NULL);
  CHECK(fseek(f, (long)offset, SEEK_SET) == 0);
  for (size_t i = 0; i < n; ++i) CHECK(fputc(byte, f) != EOF);
  CHECK(fclose(f) == 0);
}
