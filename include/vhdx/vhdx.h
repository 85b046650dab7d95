/* libvhdx C API (C11; also usable from C++). A thin wrapper of the C++ API
 * (the C++ headers beside this one): open, create, describe, read, write and map images,
 * and the whole-file operations of the vhdx CLI (check and repair, convert,
 * commit, rebase, resize, compact).
 *
 *   vhdx_image* img;
 *   if (vhdx_open("disk.vhdx", NULL, &img) != VHDX_OK) {
 *     fprintf(stderr, "%s\n", vhdx_last_error());
 *     return 1;
 *   }
 *   char buf[4096];
 *   vhdx_status st = vhdx_read(img, 0, buf, sizeof buf);
 *   st = vhdx_close(img);  // frees the handle whatever the status
 *
 * Errors. Every function returning vhdx_status returns VHDX_OK (0) or an
 * error code, and sets the calling thread's message, read with
 * vhdx_last_error(): "" after a success, else one line, the one the vhdx
 * CLI prints (without its "vhdx: " prefix): the file concerned, ": ", what
 * went wrong. The message is thread-local rather than owned by the handle
 * because a handle is shared by threads (below): a message kept in the
 * handle would be overwritten by another thread's failure while being read.
 * Nothing throws across this boundary; a failed allocation is
 * VHDX_E_NO_MEMORY. A NULL pointer argument (other than those documented
 * as optional) is VHDX_E_INVALID_ARGUMENT, its message naming the argument.
 *
 * Options. Every options struct may be passed as NULL, and a zeroed struct
 * ({0}) gives the same defaults: every field's zero value is its default.
 * Directory lists are `parent_dirs` (an array of `parent_dir_count` paths;
 * NULL when the count is 0): extra directories to find the parents of a
 * differencing image in, by file name, at every level of the chain.
 *
 * Strings returned through `char**` (JSON) are allocated with malloc and
 * owned by the caller: free them with vhdx_free(). Strings in structs
 * filled by the library (vhdx_info) belong to the handle and stay valid
 * until vhdx_close().
 *
 * Thread safety, as the C++ API: every function on a handle except
 * vhdx_close may be called from many threads at once. Reads do not
 * serialise on a shared lock; writes to different blocks proceed in
 * parallel, and readers are not blocked by writers to other blocks.
 * vhdx_close must be the last call on a handle, made when no other call on
 * it is running. Functions taking a path are independent of each other
 * (each opens its files); an image is locked against other processes while
 * a function or a handle has it open (QEMU's locks: a writer excludes every
 * other process; VHDX_E_BUSY when refused).
 *
 * Durability (read-write handles): after vhdx_flush returns VHDX_OK, every
 * write, discard and write-zeroes that completed before it was called
 * survives a crash or power failure; a crash before that may lose them but
 * never leaves the image inconsistent. vhdx_close flushes, applies the log
 * and leaves a clean file.
 */
#ifndef VHDX_VHDX_H_
#define VHDX_VHDX_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhdx/export.h"

#ifdef __cplusplus
/* The implementation catches every exception: tell C++ callers so. */
#define VHDX_NOEXCEPT noexcept
extern "C" {
#else
#define VHDX_NOEXCEPT
#endif

/* One code per vhdx::Errc (include/vhdx/status.h), in the same order. */
typedef enum vhdx_status {
  VHDX_OK = 0,
  VHDX_E_IO = 1,               /* the host file could not be read or written */
  VHDX_E_CORRUPT = 2,          /* the image violates the format */
  VHDX_E_UNSUPPORTED = 3,      /* valid VHDX, but uses something not implemented */
  VHDX_E_INVALID_ARGUMENT = 4, /* an impossible request, or a NULL argument */
  VHDX_E_NOT_FOUND = 5,        /* a file (image, parent) does not exist */
  VHDX_E_READ_ONLY = 6,        /* a write through a read-only handle */
  VHDX_E_NO_SPACE = 7,         /* the host file system is full */
  VHDX_E_OUT_OF_RANGE = 8,     /* offset/length outside the virtual disk */
  VHDX_E_BUSY = 9,             /* another process has the image open (its lock) */
  VHDX_E_NO_MEMORY = 10        /* an allocation or a thread could not be had */
} vhdx_status;

typedef enum vhdx_disk_type {
  VHDX_DISK_DYNAMIC = 0,
  VHDX_DISK_FIXED = 1,
  VHDX_DISK_DIFFERENCING = 2
} vhdx_disk_type;

/* An open image. Opaque; made by vhdx_open, freed by vhdx_close. */
typedef struct vhdx_image vhdx_image;

/* Called now and then by long operations with the work done out of the
 * total (bytes of the disk, or BAT entries for resize): `done` never
 * decreases within one phase of an operation. */
typedef void (*vhdx_progress_fn)(uint64_t done, uint64_t total, void* user);

/* ---- Library, errors, memory ------------------------------------------ */

/* "MAJOR.MINOR.PATCH"; static storage. */
VHDX_API const char* vhdx_version(void) VHDX_NOEXCEPT;
/* "VHDX_E_NOT_FOUND" style name of a code ("VHDX_E_UNKNOWN" for others);
 * static storage. */
VHDX_API const char* vhdx_status_name(vhdx_status status) VHDX_NOEXCEPT;
/* The message of this thread's last call (see Errors above): valid until
 * this thread's next call into the library. Never NULL. */
VHDX_API const char* vhdx_last_error(void) VHDX_NOEXCEPT;
/* Frees a string the library returned (JSON). NULL is ignored. */
VHDX_API void vhdx_free(void* p) VHDX_NOEXCEPT;

/* ---- Open, create, close ---------------------------------------------- */

typedef struct vhdx_open_options {
  /* false (default): read-only; the file is never written (a dirty log is
   * replayed in memory). true: read-write, exclusively locked; a dirty log
   * is replayed into the file first. */
  bool read_write;
  /* O_DIRECT (qemu's cache=none). */
  bool direct_io;
  /* Read-only only (as qemu-img -U): take no lock, read the image as it is
   * even while another process writes it. */
  bool force_share;
  /* Differencing images: the immediate parent's path, tried before any
   * other candidate (NULL: none). */
  const char* parent_path;
  const char* const* parent_dirs;
  size_t parent_dir_count;
  /* Open even when a parent's DataWriteGuid does not match the child's
   * linkage (forensics and repair only: the chain may read wrong). */
  bool ignore_parent_linkage;
  /* Open this file alone, not its parent: info works, reading and writing
   * a differencing image fail. */
  bool skip_parent;
} vhdx_open_options;

/* Opens the image at `path` (with its parent chain) and sets *out to a new
 * handle, or to NULL on any failure. `options` may be NULL (read-only). */
VHDX_API vhdx_status vhdx_open(const char* path, const vhdx_open_options* options,
                               vhdx_image** out) VHDX_NOEXCEPT;

/* Flushes, applies the log, clears LogGuid (a clean file), releases the
 * locks and frees the handle, which is invalid afterwards even when an
 * error is returned (the error says the last changes may not be durable).
 * NULL is VHDX_E_INVALID_ARGUMENT, as for every other function. */
VHDX_API vhdx_status vhdx_close(vhdx_image* image) VHDX_NOEXCEPT;

typedef struct vhdx_create_options {
  /* VHDX_DISK_DYNAMIC (default) or VHDX_DISK_FIXED; VHDX_DISK_DIFFERENCING
   * needs parent_path, which is given for it only. */
  vhdx_disk_type type;
  /* Bytes; a multiple of the logical sector size, at most 64 TiB. 0 for a
   * differencing image: the parent's size. */
  uint64_t virtual_size;
  uint32_t block_size;           /* power of two, 1-256 MiB; 0: 32 MiB */
  uint32_t logical_sector_size;  /* 512 or 4096; 0: 512 (differencing: the parent's) */
  uint32_t physical_sector_size; /* 512 or 4096; 0: 4096 (differencing: the parent's) */
  const char* parent_path;       /* differencing: the parent image */
  const char* const* parent_dirs; /* to resolve the parent's own chain */
  size_t parent_dir_count;
} vhdx_create_options;

/* Creates a new, empty image at `path`, refusing to overwrite an existing
 * file; a failure removes the partial file. `options` may not be NULL (the
 * virtual size is needed). */
VHDX_API vhdx_status vhdx_create(const char* path, const vhdx_create_options* options) VHDX_NOEXCEPT;

/* ---- Describing -------------------------------------------------------- */

typedef struct vhdx_info {
  const char* filename;         /* the path opened (owned by the handle) */
  const char* creator;          /* creator string, "" when none (owned by the handle) */
  const char* parent_filename;  /* path the parent was opened from, "" when none (owned by the handle) */
  vhdx_disk_type type;
  uint64_t virtual_size;
  uint32_t block_size;
  uint32_t logical_sector_size;
  uint32_t physical_sector_size;
  uint64_t file_size;           /* logical length of the file */
  uint8_t virtual_disk_id[16];  /* as stored (Microsoft's mixed-endian GUID) */
  char virtual_disk_id_text[37]; /* lowercase "xxxxxxxx-xxxx-...", NUL-terminated */
  uint8_t data_write_guid[16];  /* of the current header */
  bool log_dirty;               /* the file's log needed a replay when opened */
  uint64_t bat_entries;
  uint64_t payload_blocks;
  uint32_t chunk_ratio;
  uint32_t chain_depth;         /* images below this one that are open (0: no parent) */
} vhdx_info;

/* Fills *out. On a read-write handle, call it while no write is running
 * (a write may update the header fields). */
VHDX_API vhdx_status vhdx_get_info(const vhdx_image* image, vhdx_info* out) VHDX_NOEXCEPT;

/* Sets *json_out to the text `vhdx info --output=json IMAGE` prints for the
 * image (without the final newline); with `backing_chain`, that of `vhdx
 * info --backing-chain --output=json` (an array, top image first). Reads
 * the whole BAT. Free the string with vhdx_free. */
VHDX_API vhdx_status vhdx_info_json(const vhdx_image* image, bool backing_chain,
                                    char** json_out) VHDX_NOEXCEPT;

/* ---- Reading and writing (any byte alignment) -------------------------- */

/* Reads `n` bytes of the virtual disk at `offset` into `buf` (NULL allowed
 * when n is 0). VHDX_E_OUT_OF_RANGE past the virtual size. */
VHDX_API vhdx_status vhdx_read(const vhdx_image* image, uint64_t offset, void* buf, size_t n) VHDX_NOEXCEPT;

/* vhdx_write flag: force unit access, the write is durable when it returns. */
#define VHDX_WRITE_FUA 1u

/* Writes `n` bytes at `offset`. VHDX_E_READ_ONLY on a read-only handle. */
VHDX_API vhdx_status vhdx_write(vhdx_image* image, uint64_t offset, const void* buf, size_t n,
                                unsigned flags) VHDX_NOEXCEPT;
/* The range reads as zeros afterwards; whole blocks of a dynamic image
 * release their file space. */
VHDX_API vhdx_status vhdx_discard(vhdx_image* image, uint64_t offset, uint64_t length) VHDX_NOEXCEPT;
/* The range reads as zeros afterwards. With `may_unmap`, whole blocks of a
 * dynamic image release their space; without it they are zeroed in place. */
VHDX_API vhdx_status vhdx_write_zeroes(vhdx_image* image, uint64_t offset, uint64_t length,
                                       bool may_unmap) VHDX_NOEXCEPT;
/* Makes every completed change durable (see Durability above). */
VHDX_API vhdx_status vhdx_flush(vhdx_image* image) VHDX_NOEXCEPT;

/* ---- Mapping ------------------------------------------------------------ */

/* One range of the virtual disk, as `qemu-img map` (and `vhdx map`) show. */
typedef struct vhdx_extent {
  uint64_t start;
  uint64_t length;
  int depth;         /* chain level that defines it (0: this image) */
  bool present;      /* defined by this image, not left to a parent */
  bool zero;         /* reads as zeros */
  bool data;         /* backed by bytes in a file */
  bool has_offset;   /* `offset` is meaningful */
  uint64_t offset;   /* file offset of the data when has_offset */
} vhdx_extent;

/* Return 0 to go on, anything else to stop the map (not an error). */
typedef int (*vhdx_map_fn)(const vhdx_extent* extent, void* user);

/* Calls `fn` for consecutive extents covering [start, start+length), in
 * order, adjacent equal extents merged. */
VHDX_API vhdx_status vhdx_map(const vhdx_image* image, uint64_t start, uint64_t length, vhdx_map_fn fn,
                              void* user) VHDX_NOEXCEPT;

/* ---- Check and repair (as qemu-img check -r) --------------------------- */

typedef enum vhdx_repair_mode {
  VHDX_REPAIR_NONE = 0,  /* check only, nothing written */
  VHDX_REPAIR_LEAKS = 1, /* reclaim leaked space */
  VHDX_REPAIR_ALL = 2    /* also the log, header/region table copies, unusable BAT entries */
} vhdx_repair_mode;

typedef struct vhdx_check_options {
  vhdx_repair_mode repair;
  bool force_share;  /* VHDX_REPAIR_NONE only: take no lock */
  const char* const* parent_dirs;
  size_t parent_dir_count;
} vhdx_check_options;

typedef struct vhdx_check_result {
  uint64_t errors;            /* findings of severity error (after any repair) */
  uint64_t warnings;
  uint64_t corruptions;       /* as qemu-img counts them, left after the repair */
  uint64_t leaks;             /* leaked 1 MiB units left */
  uint64_t corruptions_fixed;
  uint64_t leaks_fixed;
  uint64_t image_end_offset;
  uint64_t repairs;           /* changes made to the file */
  bool chain_ok;              /* false: a differencing image's parent chain cannot be opened */
} vhdx_check_result;

/* Checks (and, with options->repair, repairs) the image at `path`, as
 * `vhdx check [-r leaks|all]`. VHDX_OK when the check ran, whatever it
 * found: damage is reported in *result and the JSON. `result` and
 * `json_out` are optional (NULL); *json_out is set to the text `vhdx check
 * --output=json` prints (without the final newline), freed with vhdx_free. */
VHDX_API vhdx_status vhdx_check(const char* path, const vhdx_check_options* options,
                                vhdx_check_result* result, char** json_out) VHDX_NOEXCEPT;

/* vhdx_check with `mode` and the other options' defaults. */
VHDX_API vhdx_status vhdx_repair(const char* path, vhdx_repair_mode mode, vhdx_check_result* result,
                                 char** json_out) VHDX_NOEXCEPT;

/* ---- Convert -------------------------------------------------------------- */

typedef enum vhdx_format {
  VHDX_FORMAT_DEFAULT = 0, /* source: VHDX for raw output, detected for VHDX output; output: VHDX */
  VHDX_FORMAT_RAW = 1,
  VHDX_FORMAT_VHDX = 2
} vhdx_format;

typedef struct vhdx_convert_options {
  vhdx_format source_format;
  vhdx_format output_format;
  /* VHDX output: type (dynamic or fixed), block and sector sizes,
   * virtual_size (0: the source's, rounded up to the sector size). Its
   * parent fields must be NULL/0. */
  vhdx_create_options create;
  /* Parent search of a differencing source (read through its chain). */
  const char* const* parent_dirs;
  size_t parent_dir_count;
  /* true: skip flushing the output (qemu-img's cache mode 'unsafe'); the
   * default makes it durable before the call returns. */
  bool unsafe;
  vhdx_progress_fn progress;  /* optional */
  void* progress_user;
} vhdx_convert_options;

/* Writes the disk of `source` into a new file `dest` (created or
 * truncated; refused when it is the source itself). Raw output is sparse.
 * A failure removes the partial output. */
VHDX_API vhdx_status vhdx_convert(const char* source, const char* dest,
                                  const vhdx_convert_options* options) VHDX_NOEXCEPT;

/* ---- Chains: commit and rebase ----------------------------------------- */

typedef struct vhdx_commit_options {
  const char* const* parent_dirs;
  size_t parent_dir_count;
  bool keep_child;  /* qemu-img commit -d: leave the child's blocks in place */
  vhdx_progress_fn progress;
  void* progress_user;
} vhdx_commit_options;

/* Writes every sector present in the differencing image `child_path` into
 * its immediate parent, crash-safely (qemu-img commit). `bytes_copied` is
 * optional. */
VHDX_API vhdx_status vhdx_commit(const char* child_path, const vhdx_commit_options* options,
                                 uint64_t* bytes_copied) VHDX_NOEXCEPT;

typedef struct vhdx_rebase_options {
  const char* const* parent_dirs;
  size_t parent_dir_count;
  bool force;  /* skip the DataWriteGuid check: the caller vouches for the data */
} vhdx_rebase_options;

/* Points the child at `new_parent_path`, a moved or renamed copy of its
 * parent (Set-VHD -ParentPath). */
VHDX_API vhdx_status vhdx_rebase(const char* child_path, const char* new_parent_path,
                                 const vhdx_rebase_options* options) VHDX_NOEXCEPT;

/* ---- Resize and compact ------------------------------------------------- */

typedef struct vhdx_resize_options {
  const char* const* parent_dirs;
  size_t parent_dir_count;
  bool shrink;  /* allow a smaller size (qemu-img resize --shrink) */
  vhdx_progress_fn progress;
  void* progress_user;
} vhdx_resize_options;

typedef struct vhdx_resize_result {
  uint64_t old_size, new_size;
  uint64_t file_size_before, file_size_after;
  bool bat_relocated;
} vhdx_resize_result;

/* Sets the virtual size of the image at `path` (growth reads as zeros).
 * `result` is optional. */
VHDX_API vhdx_status vhdx_resize(const char* path, uint64_t new_size, const vhdx_resize_options* options,
                                 vhdx_resize_result* result) VHDX_NOEXCEPT;

typedef struct vhdx_compact_options {
  const char* const* parent_dirs;
  size_t parent_dir_count;
  bool dry_run;           /* report only, write nothing */
  /* Release only all-zero blocks; by default blocks wholly in the free
   * space of clean ext2/3/4 file systems are released too. */
  bool zero_blocks_only;
  vhdx_progress_fn progress;
  void* progress_user;
} vhdx_compact_options;

typedef struct vhdx_compact_result {
  uint64_t file_size_before, file_size_after; /* after: predicted by a dry run */
  uint64_t blocks_scanned;
  uint64_t blocks_zero;     /* released: all zeros */
  uint64_t blocks_fs_free;  /* released: in a file system's free space */
  uint64_t blocks_moved;
  uint64_t bytes_moved;
} vhdx_compact_result;

/* Gives back the file space of blocks the disk does not need, in place
 * (dynamic and differencing images). `result` is optional. */
VHDX_API vhdx_status vhdx_compact(const char* path, const vhdx_compact_options* options,
                                  vhdx_compact_result* result) VHDX_NOEXCEPT;

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* VHDX_VHDX_H_ */
