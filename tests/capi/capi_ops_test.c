/* The C API's whole-file operations: convert (with progress), commit and
 * rebase on a small chain, resize, compact, check (JSON compared with the
 * CLI's) and repair of a damaged header. Needs no corpus. */
#define _POSIX_C_SOURCE 200809L

#include <string.h>

#include "capi_test.h"

enum { kMiB = 1 << 20 };

static unsigned char a[kMiB], b[kMiB], r[kMiB];

static void create_with(const char* path, uint64_t size, uint64_t data_at, const unsigned char* data, size_t n) {
  vhdx_create_options c = {0};
  c.virtual_size = size;
  c.block_size = kMiB;
  CHECK_OK(vhdx_create(path, &c));
  if (!n) return;
  vhdx_open_options o = {0};
  o.read_write = true;
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(path, &o, &img));
  CHECK_OK(vhdx_write(img, data_at, data, n, 0));
  CHECK_OK(vhdx_close(img));
}

static void image_hash(const char* path, char out[65]) {
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(path, NULL, &img));
  capi_sha256_of_image(img, out);
  CHECK_OK(vhdx_close(img));
}

static void read_at(const char* path, uint64_t offset, void* buf, size_t n) {
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(path, NULL, &img));
  CHECK_OK(vhdx_read(img, offset, buf, n));
  CHECK_OK(vhdx_close(img));
}

/* Progress sink: calls counted, `done` never decreasing nor above total
 * (within one phase: a new phase starts at a lower `done` with a new
 * total, which only compact has). */
typedef struct progress_state {
  int calls;
  uint64_t last_done, last_total;
} progress_state;

static void progress(uint64_t done, uint64_t total, void* user) {
  progress_state* p = user;
  CHECK(done <= total);
  if (p->calls && total == p->last_total) CHECK(done >= p->last_done);
  p->last_done = done;
  p->last_total = total;
  ++p->calls;
}

static void test_convert(void) {
  const char* src = capi_scratch("conv-src.vhdx");
  capi_pattern(a, sizeof a, 21, 0);
  create_with(src, 8u * kMiB, 3u * kMiB + 512, a, sizeof a);
  char want[65], got[65];
  image_hash(src, want);

  /* VHDX -> raw: the raw file is the disk. */
  const char* raw = capi_scratch("conv.raw");
  vhdx_convert_options o = {0};
  o.output_format = VHDX_FORMAT_RAW;
  progress_state p = {0};
  o.progress = progress;
  o.progress_user = &p;
  CHECK_OK(vhdx_convert(src, raw, &o));
  CHECK(p.calls > 0 && p.last_done == p.last_total && p.last_total == 8u * kMiB);
  CHECK(capi_file_size(raw) == 8u * kMiB);
  capi_sha256_of_file(raw, got);
  CHECK(strcmp(got, want) == 0);

  /* raw -> fixed VHDX (format detected), 4 KiB sectors. */
  const char* back = capi_scratch("conv-back.vhdx");
  vhdx_convert_options v = {0};
  v.create.type = VHDX_DISK_FIXED;
  v.create.block_size = 2u * kMiB;
  v.create.logical_sector_size = 4096;
  CHECK_OK(vhdx_convert(raw, back, &v));
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(back, NULL, &img));
  vhdx_info info;
  CHECK_OK(vhdx_get_info(img, &info));
  CHECK(info.type == VHDX_DISK_FIXED && info.block_size == 2u * kMiB && info.logical_sector_size == 4096);
  capi_sha256_of_image(img, got);
  CHECK(strcmp(got, want) == 0);
  CHECK_OK(vhdx_close(img));

  /* Refused: into the source itself (untouched), a missing source, a
   * differencing output. */
  CHECK_STATUS(vhdx_convert(src, src, NULL), VHDX_E_INVALID_ARGUMENT);
  image_hash(src, got);
  CHECK(strcmp(got, want) == 0);
  CHECK_STATUS(vhdx_convert(capi_scratch("missing.vhdx"), capi_scratch("x.vhdx"), NULL), VHDX_E_NOT_FOUND);
  CHECK(!capi_file_exists(capi_scratch("x.vhdx")));
  v.create.type = VHDX_DISK_DIFFERENCING;
  CHECK_STATUS(vhdx_convert(src, capi_scratch("x.vhdx"), &v), VHDX_E_INVALID_ARGUMENT);
}

static void test_commit_and_rebase(void) {
  const char* base = capi_scratch("cr-base.vhdx");
  const char* child = capi_scratch("cr-child.vhdx");
  capi_pattern(a, sizeof a, 31, 0);
  capi_pattern(b, 8192, 32, 0);
  create_with(base, 4u * kMiB, 0, a, sizeof a);
  vhdx_create_options d = {0};
  d.type = VHDX_DISK_DIFFERENCING;
  d.parent_path = base;
  CHECK_OK(vhdx_create(child, &d));
  vhdx_open_options rw = {0};
  rw.read_write = true;
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(child, &rw, &img));
  CHECK_OK(vhdx_write(img, 4096, b, 8192, 0));
  CHECK_OK(vhdx_close(img));

  /* Rebase onto a moved copy of the parent, then remove the original: the
   * chain opens through the new locator and reads as before. */
  const char* moved = capi_scratch("cr-base-moved.vhdx");
  capi_copy_file(base, moved);
  CHECK_OK(vhdx_rebase(child, moved, NULL));
  CHECK(rename(base, capi_scratch("cr-base-hidden")) == 0);
  CHECK_OK(vhdx_open(child, NULL, &img));
  vhdx_info info;
  CHECK_OK(vhdx_get_info(img, &info));
  CHECK(strstr(info.parent_filename, "cr-base-moved.vhdx") != NULL);
  CHECK_OK(vhdx_read(img, 0, r, 3 * 4096));
  CHECK(memcmp(r, a, 4096) == 0 && memcmp(r + 4096, b, 8192) == 0);
  CHECK_OK(vhdx_close(img));
  /* Rebase onto an unrelated image: its DataWriteGuid does not match. */
  const char* other = capi_scratch("cr-other.vhdx");
  create_with(other, 4u * kMiB, 0, a, 0);
  CHECK(vhdx_rebase(child, other, NULL) != VHDX_OK);
  CHECK(strstr(vhdx_last_error(), child) != NULL);

  /* Commit: the parent (the moved copy) now holds the child's sectors. */
  vhdx_commit_options c = {0};
  progress_state p = {0};
  c.progress = progress;
  c.progress_user = &p;
  uint64_t copied = 0;
  CHECK_OK(vhdx_commit(child, &c, &copied));
  CHECK(copied >= 8192);
  CHECK(p.calls > 0);
  read_at(moved, 0, r, 3 * 4096);
  CHECK(memcmp(r, a, 4096) == 0 && memcmp(r + 4096, b, 8192) == 0);
  read_at(child, 0, r, 3 * 4096);
  CHECK(memcmp(r + 4096, b, 8192) == 0);
  /* A non-differencing image has nothing to commit. */
  CHECK(vhdx_commit(moved, NULL, NULL) != VHDX_OK);
}

static void test_resize(void) {
  const char* path = capi_scratch("resize.vhdx");
  capi_pattern(a, sizeof a, 41, 0);
  create_with(path, 8u * kMiB, 2u * kMiB, a, sizeof a);
  vhdx_resize_result res;
  CHECK_OK(vhdx_resize(path, 64u * kMiB, NULL, &res));
  CHECK(res.old_size == 8u * kMiB && res.new_size == 64u * kMiB);
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(path, NULL, &img));
  vhdx_info info;
  CHECK_OK(vhdx_get_info(img, &info));
  CHECK(info.virtual_size == 64u * kMiB);
  CHECK_OK(vhdx_read(img, 40u * kMiB, r, sizeof r));
  CHECK(capi_all_zero(r, sizeof r));
  CHECK_OK(vhdx_read(img, 2u * kMiB, r, sizeof r));
  CHECK(memcmp(r, a, sizeof a) == 0);
  CHECK_OK(vhdx_close(img));

  /* Smaller: only with shrink. */
  CHECK_STATUS(vhdx_resize(path, 4u * kMiB, NULL, NULL), VHDX_E_INVALID_ARGUMENT);
  CHECK(strstr(vhdx_last_error(), path) != NULL);
  vhdx_resize_options s = {0};
  s.shrink = true;
  CHECK_OK(vhdx_resize(path, 4u * kMiB, &s, &res));
  CHECK(res.new_size == 4u * kMiB);
  read_at(path, 2u * kMiB, r, 2u * kMiB > sizeof r ? sizeof r : 2u * kMiB);
  CHECK(memcmp(r, a, sizeof r) == 0);
}

static void test_compact(void) {
  const char* path = capi_scratch("compact.vhdx");
  /* Blocks 1 and 6 hold data; block 1 is then overwritten with zeros (it
   * stays allocated): compact releases it and moves block 6 down. */
  capi_pattern(a, sizeof a, 51, 0);
  create_with(path, 8u * kMiB, kMiB, a, sizeof a);
  vhdx_open_options rw = {0};
  rw.read_write = true;
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(path, &rw, &img));
  CHECK_OK(vhdx_write(img, 6u * kMiB, a, sizeof a, 0));
  memset(b, 0, sizeof b);
  CHECK_OK(vhdx_write(img, kMiB, b, sizeof b, 0));
  CHECK_OK(vhdx_close(img));
  char want[65], got[65];
  image_hash(path, want);

  vhdx_compact_options o = {0};
  o.dry_run = true;
  vhdx_compact_result res;
  const uint64_t size_before = capi_file_size(path);
  CHECK_OK(vhdx_compact(path, &o, &res));
  CHECK(res.blocks_zero == 1);
  CHECK(capi_file_size(path) == size_before);
  o.dry_run = false;
  o.zero_blocks_only = true;
  progress_state p = {0};
  o.progress = progress;
  o.progress_user = &p;
  CHECK_OK(vhdx_compact(path, &o, &res));
  CHECK(res.blocks_zero == 1 && res.blocks_scanned == 2);
  CHECK(res.file_size_after < res.file_size_before);
  CHECK(capi_file_size(path) == res.file_size_after);
  CHECK(p.calls > 0);
  image_hash(path, got);
  CHECK(strcmp(got, want) == 0);

  /* A fixed image is refused. */
  const char* fixed = capi_scratch("compact-fixed.vhdx");
  vhdx_create_options c = {0};
  c.type = VHDX_DISK_FIXED;
  c.virtual_size = 2u * kMiB;
  CHECK_OK(vhdx_create(fixed, &c));
  CHECK(vhdx_compact(fixed, NULL, NULL) != VHDX_OK);
  CHECK(strstr(vhdx_last_error(), fixed) != NULL);
}

/* `vhdx check --output=json PATH` without its final newline. */
static char* cli_check_json(const char* path, int* code) {
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "'%s' check --output=json '%s' 2>/dev/null", capi_cli(), path);
  char* out = capi_run(cmd, code);
  size_t n = strlen(out);
  CHECK(n > 0 && out[n - 1] == '\n');
  out[n - 1] = '\0';
  return out;
}

static void test_check_and_repair(void) {
  const char* path = capi_scratch("damaged.vhdx");
  capi_pattern(a, sizeof a, 61, 0);
  create_with(path, 8u * kMiB, kMiB, a, sizeof a);
  char want[65], got[65];
  image_hash(path, want);

  /* Clean: no corruption; the JSON is the CLI's. */
  vhdx_check_result res;
  char* json = NULL;
  CHECK_OK(vhdx_check(path, NULL, &res, &json));
  CHECK(res.corruptions == 0 && res.errors == 0 && res.leaks == 0 && res.chain_ok);
  int code = -1;
  char* cli = cli_check_json(path, &code);
  CHECK(code == 0);
  CHECK(strcmp(json, cli) == 0);
  CHECK(strstr(json, "\"corruptions\": 0") != NULL);
  vhdx_free(json);
  free(cli);

  /* Garbage over header 1 (64 KiB into the file): the other copy is valid,
   * so the image reads, but check counts a corruption and repair rewrites
   * the copy. */
  capi_damage(path, 64 * 1024 + 16, 200, 0x5a);
  CHECK_OK(vhdx_check(path, NULL, &res, &json));
  CHECK(res.corruptions >= 1);
  cli = cli_check_json(path, &code);
  CHECK(code == 2);
  if (strcmp(json, cli) != 0) fprintf(stderr, "C API:\n%s\nCLI:\n%s\n", json, cli);
  CHECK(strcmp(json, cli) == 0);
  CHECK(strstr(json, "header 1") != NULL);
  vhdx_free(json);
  free(cli);

  CHECK_OK(vhdx_repair(path, VHDX_REPAIR_ALL, &res, &json));
  CHECK(res.corruptions == 0 && res.corruptions_fixed >= 1 && res.repairs >= 1);
  CHECK(strstr(json, "\"repairs\": [") != NULL && strstr(json, "header 1") != NULL);
  vhdx_free(json);
  CHECK_OK(vhdx_check(path, NULL, &res, NULL));
  CHECK(res.corruptions == 0);
  image_hash(path, got);
  CHECK(strcmp(got, want) == 0);

  /* A bad repair mode. */
  vhdx_check_options bad = {0};
  bad.repair = (vhdx_repair_mode)9;
  CHECK_STATUS(vhdx_check(path, &bad, NULL, NULL), VHDX_E_INVALID_ARGUMENT);
}

int main(void) {
  test_convert();
  test_commit_and_rebase();
  test_resize();
  test_compact();
  test_check_and_repair();
  printf("ok\n");
  return 0;
}
