/* The C API on real-world images (/work/shared/corpus, MANIFEST.md): the
 * content read through vhdx_read has the manifest's SHA-256; the dirty-log
 * image opens read-only without being written, its info and check JSON are
 * the CLI's, and a repair replays its log into the file. */
#define _POSIX_C_SOURCE 200809L

#include <string.h>

#include "capi_test.h"

/* Content SHA-256 from MANIFEST.md. */
static const char kDynamicSha[] = "8e2b5e9265d694b42b81819e3bff29770eff4ed0f4f9f311693ff3dbdc93efac";
static const char kIotest1GSha[] = "d3d112d8dab7fd360609f7d5a7b769904b7a2a7d7b6b8c535f65a23293c05478";

static void expect_content(const char* corpus_name, const char* leaf, const char* sha) {
  const char* path = capi_corpus_image(corpus_name, leaf);
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(path, NULL, &img));
  char got[65];
  capi_sha256_of_image(img, got);
  if (strcmp(got, sha) != 0) fprintf(stderr, "%s: content %s, manifest %s\n", corpus_name, got, sha);
  CHECK(strcmp(got, sha) == 0);
  CHECK_OK(vhdx_close(img));
}

/* What the CLI prints for `args PATH`, without the final newline. */
static char* cli_json(const char* args, const char* path) {
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "'%s' %s '%s' 2>/dev/null", capi_cli(), args, path);
  int code = 0;
  char* out = capi_run(cmd, &code);
  size_t n = strlen(out);
  CHECK(n > 0 && out[n - 1] == '\n');
  out[n - 1] = '\0';
  return out;
}

/* Hashes, in order, the start, length and bytes of every extent that is
 * not zero: two views with the same allocation and content agree. */
typedef struct data_hash {
  const vhdx_image* image;
  uint64_t sum;  /* FNV-1a of the bytes and the extent bounds */
  uint64_t bytes;
} data_hash;

static void fnv(data_hash* h, const void* p, size_t n) {
  const unsigned char* b = p;
  for (size_t i = 0; i < n; ++i) h->sum = (h->sum ^ b[i]) * 1099511628211ull;
}

static int hash_extent(const vhdx_extent* e, void* user) {
  data_hash* h = user;
  if (e->zero) return 0;
  static unsigned char buf[1 << 20];
  fnv(h, &e->start, sizeof e->start);
  for (uint64_t off = 0; off < e->length; off += sizeof buf) {
    size_t n = e->length - off < sizeof buf ? (size_t)(e->length - off) : sizeof buf;
    CHECK_OK(vhdx_read(h->image, e->start + off, buf, n));
    fnv(h, buf, n);
  }
  h->bytes += e->length;
  return 0;
}

static data_hash hash_data(const char* path, bool* dirty) {
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(path, NULL, &img));
  vhdx_info info;
  CHECK_OK(vhdx_get_info(img, &info));
  *dirty = info.log_dirty;
  data_hash h = {img, 1469598103934665603ull, 0};
  CHECK_OK(vhdx_map(img, 0, info.virtual_size, hash_extent, &h));
  CHECK_OK(vhdx_close(img));
  return h;
}

static void test_dirty_log(void) {
  const char* path = capi_corpus_image("iotest-dirtylog-10G-4M.vhdx.bz2", "dirtylog.vhdx");
  char file_before[65], file_after[65];
  capi_sha256_of_file(path, file_before);

  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(path, NULL, &img));
  vhdx_info info;
  CHECK_OK(vhdx_get_info(img, &info));
  CHECK(info.log_dirty);
  CHECK(info.virtual_size == 10737418240ull && info.block_size == 1u << 20);
  CHECK(info.logical_sector_size == 512 && info.physical_sector_size == 512);
  char* json = NULL;
  CHECK_OK(vhdx_info_json(img, false, &json));
  char* cli = cli_json("info --output=json", path);
  if (strcmp(json, cli) != 0) fprintf(stderr, "C API:\n%s\nCLI:\n%s\n", json, cli);
  CHECK(strcmp(json, cli) == 0);
  CHECK(strstr(json, "\"dirty\": true") != NULL);
  vhdx_free(json);
  free(cli);
  /* A write through a read-only handle is refused. */
  unsigned char sector[512] = {1};
  CHECK_STATUS(vhdx_write(img, 0, sector, sizeof sector, 0), VHDX_E_READ_ONLY);
  CHECK_OK(vhdx_close(img));

  vhdx_check_result res;
  CHECK_OK(vhdx_check(path, NULL, &res, &json));
  cli = cli_json("check --output=json", path);
  if (strcmp(json, cli) != 0) fprintf(stderr, "C API:\n%s\nCLI:\n%s\n", json, cli);
  CHECK(strcmp(json, cli) == 0);
  vhdx_free(json);
  free(cli);

  /* Read-only use left the file as it was. */
  bool dirty = false;
  data_hash before = hash_data(path, &dirty);
  CHECK(dirty && before.bytes > 0);
  capi_sha256_of_file(path, file_after);
  CHECK(strcmp(file_before, file_after) == 0);

  /* Repair replays the log into the file: clean afterwards, same content. */
  CHECK_OK(vhdx_repair(path, VHDX_REPAIR_ALL, &res, &json));
  CHECK(strstr(json, "\"log-entries-replayed\": 1") != NULL);
  CHECK(res.corruptions == 0);
  vhdx_free(json);
  capi_sha256_of_file(path, file_after);
  CHECK(strcmp(file_before, file_after) != 0);
  data_hash after = hash_data(path, &dirty);
  CHECK(!dirty);
  CHECK(after.sum == before.sum && after.bytes == before.bytes);
}

int main(void) {
  capi_corpus_or_skip();
  expect_content("dynamic.vhdx.gz", "dynamic.vhdx", kDynamicSha);
  expect_content("iotest-dynamic-1G.vhdx.bz2", "iotest-1g.vhdx", kIotest1GSha);
  test_dirty_log();
  printf("ok\n");
  return 0;
}
