/* The C API on open images: create (dynamic, fixed, differencing), read and
 * write, discard and write-zeroes, flush and close, read-only handles, map,
 * info and its JSON (compared with the CLI's). Needs no corpus. */
#define _POSIX_C_SOURCE 200809L

#include <string.h>
#include <threads.h>

#include "capi_test.h"

enum { kMiB = 1 << 20 };

/* Map sink: checks the extents are consecutive from `next`, and records
 * what covers a few probe offsets. */
typedef struct map_state {
  uint64_t next;
  int calls;
  int data_at_1m;  /* the extent holding offset 1 MiB + 5 has data */
  int zero_at_9m;  /* the extent holding offset 9 MiB reads as zeros */
} map_state;

static int map_sink(const vhdx_extent* e, void* user) {
  map_state* s = user;
  CHECK(e->start == s->next);
  CHECK(e->length > 0);
  s->next = e->start + e->length;
  ++s->calls;
  if (e->start <= kMiB + 5 && kMiB + 5 < e->start + e->length) s->data_at_1m = e->data && !e->zero && e->has_offset;
  if (e->start <= 9u * kMiB && 9u * kMiB < e->start + e->length) s->zero_at_9m = e->zero;
  return 0;
}

static int map_stop_first(const vhdx_extent* e, void* user) {
  (void)e;
  ++*(int*)user;
  return 1;  /* stop */
}

/* The text `vhdx info --output=json [--backing-chain]` prints for `path`,
 * without its final newline. */
static char* cli_info_json(const char* path, int backing_chain) {
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "'%s' info --output=json %s '%s'", capi_cli(), backing_chain ? "--backing-chain" : "",
           path);
  int code = 0;
  char* out = capi_run(cmd, &code);
  CHECK(code == 0);
  size_t n = strlen(out);
  CHECK(n > 0 && out[n - 1] == '\n');
  out[n - 1] = '\0';
  return out;
}

static void test_dynamic_round_trip(void) {
  const char* path = capi_scratch("dyn.vhdx");
  vhdx_create_options c = {0};
  c.virtual_size = 16u * kMiB;
  c.block_size = kMiB;
  CHECK_OK(vhdx_create(path, &c));
  CHECK(strcmp(vhdx_last_error(), "") == 0);
  /* Refuses to overwrite. */
  CHECK(vhdx_create(path, &c) != VHDX_OK);
  CHECK(strstr(vhdx_last_error(), path) != NULL);

  vhdx_open_options o = {0};
  o.read_write = true;
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(path, &o, &img));
  CHECK(img != NULL);

  /* An unaligned write across a block boundary, and one in block 5. */
  static unsigned char w[3 * kMiB], r[3 * kMiB];
  capi_pattern(w, sizeof w, 1, kMiB - 100);
  CHECK_OK(vhdx_write(img, kMiB - 100, w, sizeof w, 0));
  CHECK_OK(vhdx_write(img, 5u * kMiB, w, 4096, VHDX_WRITE_FUA));
  CHECK_OK(vhdx_read(img, kMiB - 100, r, sizeof r));
  CHECK(memcmp(w, r, sizeof w) == 0);

  /* Discard a whole block and write zeroes over an unaligned range: both
   * read as zeros, the bytes around them unchanged. */
  CHECK_OK(vhdx_discard(img, 2u * kMiB, kMiB));
  CHECK_OK(vhdx_write_zeroes(img, kMiB + 10, 1000, false));
  CHECK_OK(vhdx_write_zeroes(img, 5u * kMiB, kMiB, true));
  CHECK_OK(vhdx_read(img, kMiB - 100, r, sizeof r));
  CHECK(memcmp(r, w, 110) == 0);
  CHECK(capi_all_zero(r + 110, 1000));
  CHECK(memcmp(r + 1110, w + 1110, kMiB + 100 - 1110) == 0);
  CHECK(capi_all_zero(r + kMiB + 100, kMiB));
  CHECK(memcmp(r + 2 * kMiB + 100, w + 2 * kMiB + 100, kMiB - 100) == 0);
  CHECK_OK(vhdx_read(img, 5u * kMiB, r, 4096));
  CHECK(capi_all_zero(r, 4096));

  /* Past the end. */
  CHECK_STATUS(vhdx_read(img, 16u * kMiB - 1, r, 2), VHDX_E_OUT_OF_RANGE);
  CHECK(strstr(vhdx_last_error(), path) != NULL);
  CHECK_STATUS(vhdx_write(img, 16u * kMiB, w, 1, 0), VHDX_E_OUT_OF_RANGE);
  CHECK_STATUS(vhdx_write(img, 0, w, 1, 0x80), VHDX_E_INVALID_ARGUMENT);
  /* n == 0 with a NULL buffer is an empty request, not an error. */
  CHECK_OK(vhdx_read(img, 0, NULL, 0));

  CHECK_OK(vhdx_flush(img));
  CHECK_OK(vhdx_close(img));

  /* Read-only: the data survived; every write is refused. */
  CHECK_OK(vhdx_open(path, NULL, &img));
  CHECK_OK(vhdx_read(img, kMiB - 100, r, 110));
  CHECK(memcmp(r, w, 110) == 0);
  CHECK_OK(vhdx_read(img, 3u * kMiB, r, kMiB - 100));
  CHECK(memcmp(r, w + 2 * kMiB + 100, kMiB - 100) == 0);
  CHECK_STATUS(vhdx_write(img, 0, w, 512, 0), VHDX_E_READ_ONLY);
  CHECK(strstr(vhdx_last_error(), path) != NULL);
  CHECK_STATUS(vhdx_discard(img, 0, kMiB), VHDX_E_READ_ONLY);
  CHECK_STATUS(vhdx_write_zeroes(img, 0, kMiB, true), VHDX_E_READ_ONLY);
  CHECK_STATUS(vhdx_flush(img), VHDX_E_READ_ONLY);

  /* Map: consecutive extents covering the disk; the written block holds
   * data, the never-written tail reads zeros. */
  map_state s = {0};
  CHECK_OK(vhdx_map(img, 0, 16u * kMiB, map_sink, &s));
  CHECK(s.next == 16u * kMiB);
  CHECK(s.calls >= 3);
  CHECK(s.data_at_1m);
  CHECK(s.zero_at_9m);
  int calls = 0;
  CHECK_OK(vhdx_map(img, 0, 16u * kMiB, map_stop_first, &calls));
  CHECK(calls == 1);

  /* Info. */
  vhdx_info info;
  CHECK_OK(vhdx_get_info(img, &info));
  CHECK(strcmp(info.filename, path) == 0);
  CHECK(info.type == VHDX_DISK_DYNAMIC);
  CHECK(info.virtual_size == 16u * kMiB);
  CHECK(info.block_size == kMiB);
  CHECK(info.logical_sector_size == 512 && info.physical_sector_size == 4096);
  CHECK(info.file_size == capi_file_size(path));
  CHECK(!info.log_dirty);
  CHECK(info.payload_blocks == 16);
  CHECK(info.chain_depth == 0 && strcmp(info.parent_filename, "") == 0);
  CHECK(strncmp(info.creator, "libvhdx", 7) == 0);
  /* The text id is the bytes in Microsoft's layout: Data1 little-endian. */
  char first[9];
  snprintf(first, sizeof first, "%02x%02x%02x%02x", info.virtual_disk_id[3], info.virtual_disk_id[2],
           info.virtual_disk_id[1], info.virtual_disk_id[0]);
  CHECK(strlen(info.virtual_disk_id_text) == 36 && strncmp(info.virtual_disk_id_text, first, 8) == 0);

  /* Info JSON: byte for byte what the CLI prints. */
  char* json = NULL;
  CHECK_OK(vhdx_info_json(img, false, &json));
  char* cli = cli_info_json(path, 0);
  if (strcmp(json, cli) != 0) fprintf(stderr, "C API:\n%s\nCLI:\n%s\n", json, cli);
  CHECK(strcmp(json, cli) == 0);
  CHECK(strstr(json, "\"virtual-size\": 16777216") != NULL);
  vhdx_free(json);
  free(cli);
  CHECK_OK(vhdx_close(img));
}

static void test_fixed(void) {
  const char* path = capi_scratch("fixed.vhdx");
  vhdx_create_options c = {0};
  c.type = VHDX_DISK_FIXED;
  c.virtual_size = 4u * kMiB;
  c.block_size = kMiB;
  c.logical_sector_size = 4096;
  CHECK_OK(vhdx_create(path, &c));
  vhdx_image* img = NULL;
  vhdx_open_options o = {0};
  o.read_write = true;
  CHECK_OK(vhdx_open(path, &o, &img));
  vhdx_info info;
  CHECK_OK(vhdx_get_info(img, &info));
  CHECK(info.type == VHDX_DISK_FIXED);
  CHECK(info.logical_sector_size == 4096);
  /* Payload space for every block is in the file. */
  CHECK(info.file_size >= 4u * kMiB + 3u * kMiB);
  static unsigned char w[kMiB], r[kMiB];
  capi_pattern(w, sizeof w, 7, 0);
  CHECK_OK(vhdx_write(img, 3u * kMiB, w, sizeof w, 0));
  CHECK_OK(vhdx_discard(img, 3u * kMiB, 4096));
  CHECK_OK(vhdx_read(img, 3u * kMiB, r, sizeof r));
  CHECK(capi_all_zero(r, 4096));
  CHECK(memcmp(r + 4096, w + 4096, sizeof r - 4096) == 0);
  CHECK_OK(vhdx_close(img));
}

static void test_differencing(void) {
  const char* parent = capi_scratch("base.vhdx");
  const char* child = capi_scratch("child.vhdx");
  vhdx_create_options c = {0};
  c.virtual_size = 8u * kMiB;
  c.block_size = kMiB;
  CHECK_OK(vhdx_create(parent, &c));
  static unsigned char a[2 * kMiB], b[4096], r[2 * kMiB];
  capi_pattern(a, sizeof a, 11, 0);
  capi_pattern(b, sizeof b, 12, 0);
  vhdx_image* img = NULL;
  vhdx_open_options rw = {0};
  rw.read_write = true;
  CHECK_OK(vhdx_open(parent, &rw, &img));
  CHECK_OK(vhdx_write(img, 0, a, sizeof a, 0));
  CHECK_OK(vhdx_close(img));

  vhdx_create_options d = {0};
  d.type = VHDX_DISK_DIFFERENCING;
  d.parent_path = parent;
  CHECK_OK(vhdx_create(child, &d));
  CHECK_OK(vhdx_open(child, &rw, &img));
  vhdx_info info;
  CHECK_OK(vhdx_get_info(img, &info));
  CHECK(info.type == VHDX_DISK_DIFFERENCING);
  CHECK(info.virtual_size == 8u * kMiB);
  CHECK(info.chain_depth == 1);
  CHECK(strstr(info.parent_filename, "base.vhdx") != NULL);
  /* Reads through to the parent; a write changes the child only. */
  CHECK_OK(vhdx_read(img, 0, r, sizeof r));
  CHECK(memcmp(r, a, sizeof a) == 0);
  CHECK_OK(vhdx_write(img, 4096, b, sizeof b, 0));
  CHECK_OK(vhdx_read(img, 0, r, 3 * 4096));
  CHECK(memcmp(r, a, 4096) == 0 && memcmp(r + 4096, b, 4096) == 0 && memcmp(r + 8192, a + 8192, 4096) == 0);
  CHECK_OK(vhdx_close(img));

  CHECK_OK(vhdx_open(parent, NULL, &img));
  CHECK_OK(vhdx_read(img, 4096, r, 4096));
  CHECK(memcmp(r, a + 4096, 4096) == 0);
  CHECK_OK(vhdx_close(img));

  /* The chain's JSON, both forms, as the CLI prints them. */
  CHECK_OK(vhdx_open(child, NULL, &img));
  for (int chain = 0; chain < 2; ++chain) {
    char* json = NULL;
    CHECK_OK(vhdx_info_json(img, chain, &json));
    char* cli = cli_info_json(child, chain);
    if (strcmp(json, cli) != 0) fprintf(stderr, "C API:\n%s\nCLI:\n%s\n", json, cli);
    CHECK(strcmp(json, cli) == 0);
    char full[700];
    snprintf(full, sizeof full, "\"full-backing-filename\": \"%s\"", parent);
    CHECK(strstr(json, full) != NULL);
    CHECK(chain ? json[0] == '[' : json[0] == '{');
    vhdx_free(json);
    free(cli);
  }
  CHECK_OK(vhdx_close(img));

  /* Differencing without a parent, or a parent with another type: refused. */
  vhdx_create_options bad = {0};
  bad.type = VHDX_DISK_DIFFERENCING;
  CHECK_STATUS(vhdx_create(capi_scratch("bad.vhdx"), &bad), VHDX_E_INVALID_ARGUMENT);
  CHECK(strstr(vhdx_last_error(), "parent_path") != NULL);
  bad.type = VHDX_DISK_DYNAMIC;
  bad.parent_path = parent;
  CHECK_STATUS(vhdx_create(capi_scratch("bad.vhdx"), &bad), VHDX_E_INVALID_ARGUMENT);
  CHECK(!capi_file_exists(capi_scratch("bad.vhdx")));
}

/* Threads: one handle shared by 4 threads, each writing and reading back
 * its own blocks, and each seeing only its own error message. */
typedef struct thread_arg {
  vhdx_image* image;
  int index;
  int failures;
} thread_arg;

static int thread_main(void* p) {
  thread_arg* t = p;
  static _Thread_local unsigned char w[64 * 1024], r[64 * 1024];
  for (int round = 0; round < 16; ++round) {
    const uint64_t off = ((uint64_t)t->index * 16 + (uint64_t)round) * (kMiB / 4) + 512u * (uint64_t)t->index;
    capi_pattern(w, sizeof w, (uint64_t)t->index * 100 + (uint64_t)round, off);
    if (vhdx_write(t->image, off, w, sizeof w, 0) != VHDX_OK || strcmp(vhdx_last_error(), "") != 0) ++t->failures;
    if (vhdx_read(t->image, off, r, sizeof r) != VHDX_OK || memcmp(w, r, sizeof r) != 0) ++t->failures;
    /* Odd threads fail a call; the message is theirs alone, and even
     * threads' successes leave theirs empty meanwhile. */
    if (t->index % 2) {
      if (vhdx_read(t->image, 64u * kMiB, r, 1) != VHDX_E_OUT_OF_RANGE) ++t->failures;
      if (strstr(vhdx_last_error(), "mt.vhdx") == NULL) ++t->failures;
    } else if (strcmp(vhdx_last_error(), "") != 0) {
      ++t->failures;
    }
  }
  return 0;
}

static void test_threads(void) {
  const char* path = capi_scratch("mt.vhdx");
  vhdx_create_options c = {0};
  c.virtual_size = 64u * kMiB;
  c.block_size = kMiB;
  CHECK_OK(vhdx_create(path, &c));
  vhdx_open_options o = {0};
  o.read_write = true;
  vhdx_image* img = NULL;
  CHECK_OK(vhdx_open(path, &o, &img));
  thrd_t threads[4];
  thread_arg args[4];
  for (int i = 0; i < 4; ++i) {
    args[i] = (thread_arg){img, i, 0};
    CHECK(thrd_create(&threads[i], thread_main, &args[i]) == thrd_success);
  }
  for (int i = 0; i < 4; ++i) {
    CHECK(thrd_join(threads[i], NULL) == thrd_success);
    CHECK(args[i].failures == 0);
  }
  CHECK_OK(vhdx_close(img));
  /* Everything written is there after a reopen. */
  CHECK_OK(vhdx_open(path, NULL, &img));
  static unsigned char w[64 * 1024], r[64 * 1024];
  for (int i = 0; i < 4; ++i)
    for (int round = 0; round < 16; ++round) {
      const uint64_t off = ((uint64_t)i * 16 + (uint64_t)round) * (kMiB / 4) + 512u * (uint64_t)i;
      capi_pattern(w, sizeof w, (uint64_t)i * 100 + (uint64_t)round, off);
      CHECK_OK(vhdx_read(img, off, r, sizeof r));
      CHECK(memcmp(w, r, sizeof r) == 0);
    }
  CHECK_OK(vhdx_close(img));
}

int main(void) {
  test_dynamic_round_trip();
  test_fixed();
  test_differencing();
  test_threads();
  printf("ok\n");
  return 0;
}
