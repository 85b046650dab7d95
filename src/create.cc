// New images, laid out as Windows lays them out (digest §8.7, §10, §11).
// No log is needed while creating: a crash mid-way leaves an unusable file
// either way, so everything is written in place and flushed once.
//
// A differencing child takes its parent's logical and physical sector
// sizes whatever the options say (the CLI always passes its defaults, and a
// child whose sectors differ from its parent's cannot be read through the
// chain), the parent's virtual disk ID and, unless a larger one is asked
// for, its virtual size.
#include "vhdx/create.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "format/bat.h"
#include "format/constants.h"
#include "format/header.h"
#include "format/metadata.h"
#include "format/region_table.h"
#include "parent_paths.h"
#include "util/coding.h"

namespace vhdx {

using namespace format;

Status ValidateCreateOptions(const CreateOptions& o) {
  auto bad = [](const std::string& what) { return Status(Errc::kInvalidArgument, what); };
  if (!IsPowerOfTwo(o.block_size) || o.block_size < kMinBlockSize || o.block_size > kMaxBlockSize)
    return bad(fmt::format("block size {} is not a power of two between 1 MiB and 256 MiB", o.block_size));
  if (!o.parent_path.empty()) {
    // The rest comes from the parent (checked once it is open); 0 = its size.
    if (o.virtual_size > kMaxVirtualSize)
      return bad(fmt::format("size {} is larger than 64 TiB", o.virtual_size));
    return Status::Ok();
  }
  if (o.type == DiskType::kDifferencing)
    return bad("a differencing image needs a parent image (parent_path); without one only "
               "dynamic and fixed images can be created");
  if (o.type != DiskType::kDynamic && o.type != DiskType::kFixed)
    return bad("only dynamic, fixed and differencing images can be created");
  if (o.logical_sector_size != 512 && o.logical_sector_size != 4096)
    return bad(fmt::format("logical sector size {} is neither 512 nor 4096", o.logical_sector_size));
  if (o.physical_sector_size != 512 && o.physical_sector_size != 4096)
    return bad(fmt::format("physical sector size {} is neither 512 nor 4096", o.physical_sector_size));
  if (o.virtual_size == 0 || o.virtual_size > kMaxVirtualSize)
    return bad(fmt::format("size {} is not between 1 byte and 64 TiB", o.virtual_size));
  if (o.virtual_size % o.logical_sector_size != 0)
    return bad(fmt::format("size {} is not a multiple of the logical sector size {}", o.virtual_size,
                           o.logical_sector_size));
  return Status::Ok();
}

namespace {

// The room after the five fixed items in the 1 MiB metadata region.
constexpr uint64_t kMaxLocatorLength = 1 * MiB - kMetadataTableSize - 40;

// What a differencing child inherits from its parent (digest §8.7).
struct ChildOfParent {
  uint64_t virtual_size = 0;
  uint32_t logical_sector_size = 0, physical_sector_size = 0;
  Guid virtual_disk_id;
  std::vector<uint8_t> locator;  // the serialised Parent Locator item
};

Result<ChildOfParent> InheritFromParent(const CreateOptions& o, const std::string& child_path) {
  const std::string context = "parent " + o.parent_path;
  OpenOptions open_options;
  open_options.read_only = true;  // a parent must never change (its children would break)
  open_options.parent_dirs = o.parent_dirs;
  auto parent = Image::Open(o.parent_path, open_options);
  if (!parent.ok()) return parent.status().WithContext(context);
  const ImageInfo& info = (*parent)->info();
  ChildOfParent c;
  c.virtual_size = o.virtual_size ? o.virtual_size : info.virtual_size;
  if (c.virtual_size < info.virtual_size)
    return Status(Errc::kInvalidArgument,
                  fmt::format("size {} is smaller than the size {} of the parent {}", c.virtual_size,
                              info.virtual_size, o.parent_path));
  if (c.virtual_size % info.logical_sector_size != 0)
    return Status(Errc::kInvalidArgument,
                  fmt::format("size {} is not a multiple of the parent's logical sector size {}",
                              c.virtual_size, info.logical_sector_size));
  c.logical_sector_size = info.logical_sector_size;
  c.physical_sector_size = info.physical_sector_size;
  c.virtual_disk_id = info.virtual_disk_id;
  const Guid& linkage = info.headers[info.current_header].data_write_guid;
  ParentLocator locator = MakeParentLocator(o.parent_path, child_path, linkage);
  c.locator = SerializeParentLocator(locator);
  // A path too long for the item's 16-bit lengths would not read back.
  ParentLocator reread;
  if (c.locator.size() > kMaxLocatorLength ||
      !ParseParentLocator(c.locator.data(), c.locator.size(), 0, &reread).ok() ||
      reread.entries != locator.entries)
    return Status(Errc::kInvalidArgument,
                  fmt::format("the paths of the parent {} and the child {} are too long for a "
                              "parent locator",
                              o.parent_path, child_path));
  return c;
}

}  // namespace

Status CreateImage(File& file, const CreateOptions& options) {
  VHDX_RETURN_IF_ERROR(ValidateCreateOptions(options));
  VHDX_ASSIGN_OR_RETURN(uint64_t existing, file.Size());
  if (existing != 0) return Status(Errc::kInvalidArgument, "the file is not empty");
  CreateOptions o = options;
  const bool child = !o.parent_path.empty();
  Guid disk_id = Guid::Random();
  std::vector<uint8_t> locator;
  if (child) {
    VHDX_ASSIGN_OR_RETURN(ChildOfParent c, InheritFromParent(o, file.name()));
    o.virtual_size = c.virtual_size;
    o.logical_sector_size = c.logical_sector_size;
    o.physical_sector_size = c.physical_sector_size;
    disk_id = c.virtual_disk_id;
    locator = std::move(c.locator);
  }
  const bool fixed = !child && o.type == DiskType::kFixed;
  VHDX_ASSIGN_OR_RETURN(Geometry g, Geometry::Make(o.virtual_size, o.block_size, o.logical_sector_size,
                                                   /*has_parent=*/child));
  constexpr uint64_t kLogOffset = 1 * MiB, kLogLength = 1 * MiB;
  constexpr uint64_t kMetadataOffset = 2 * MiB, kMetadataLength = 1 * MiB;
  constexpr uint64_t kBatOffset = 3 * MiB;
  const uint64_t bat_length = RoundUp(g.total_entries * 8, MiB);
  const uint64_t payload_offset = kBatOffset + bat_length;
  const uint64_t file_size = payload_offset + (fixed ? g.payload_blocks * o.block_size : 0);

  // Header section: identifier, two headers, two identical region tables.
  std::vector<uint8_t> head(kHeaderSectionSize, 0);
  SerializeFileIdentifier({fmt::format("libvhdx {}", Version())}, head.data());
  Header h;
  h.file_write_guid = Guid::Random();
  h.data_write_guid = Guid::Random();
  h.log_length = kLogLength;
  h.log_offset = kLogOffset;
  for (int slot = 0; slot < 2; ++slot) {
    h.sequence_number = slot + 1;
    SerializeHeader(h, head.data() + kHeaderOffsets[slot]);
  }
  RegionTable regions;
  regions.entries = {{kBatRegionGuid, kBatOffset, static_cast<uint32_t>(bat_length), 1},
                     {kMetadataRegionGuid, kMetadataOffset, static_cast<uint32_t>(kMetadataLength), 1}};
  SerializeRegionTable(regions, head.data() + kRegionTable1Offset);
  SerializeRegionTable(regions, head.data() + kRegionTable2Offset);

  // Metadata region: table, then the items in Windows' order.
  std::vector<uint8_t> meta(kMetadataLength, 0);
  MetadataTable table;
  uint8_t* items = meta.data() + kMetadataTableSize;
  SerializeFileParameters({o.block_size, fixed, child}, items);
  EncodeFixed64(items + 8, o.virtual_size);
  EncodeFixed32(items + 16, o.logical_sector_size);
  EncodeFixed32(items + 20, o.physical_sector_size);
  std::memcpy(items + 24, disk_id.bytes.data(), 16);
  const uint32_t base = kMetadataTableSize;
  table.entries = {
      {kFileParametersGuid, base + 0, 8, kMetaIsRequired},
      {kVirtualDiskSizeGuid, base + 8, 8, kMetaIsRequired | kMetaIsVirtualDisk},
      {kLogicalSectorSizeGuid, base + 16, 4, kMetaIsRequired | kMetaIsVirtualDisk},
      {kPhysicalSectorSizeGuid, base + 20, 4, kMetaIsRequired | kMetaIsVirtualDisk},
      {kVirtualDiskIdGuid, base + 24, 16, kMetaIsRequired | kMetaIsVirtualDisk},
  };
  if (child) {
    // At most kMaxLocatorLength: it fits the region.
    std::memcpy(items + 40, locator.data(), locator.size());
    table.entries.push_back(
        {kParentLocatorGuid, base + 40, static_cast<uint32_t>(locator.size()), kMetaIsRequired});
  }
  SerializeMetadataTable(table, meta.data());

  // Size the file first so that a full disk fails before anything is written.
  if (fixed) {
    VHDX_RETURN_IF_ERROR(file.Allocate(0, file_size).WithContext("reserving the fixed image's space"));
  } else {
    VHDX_RETURN_IF_ERROR(file.Truncate(file_size));
  }
  VHDX_RETURN_IF_ERROR(file.WriteAt(0, head.data(), head.size()));
  // The log area stays zero (LogGuid is zero, so nothing in it is read).
  VHDX_RETURN_IF_ERROR(file.WriteAt(kMetadataOffset, meta.data(), meta.size()));
  if (fixed) {
    // Every payload entry FULLY_PRESENT at consecutive offsets; the
    // sector-bitmap slots stay zero. Written in 1 MiB pieces of the BAT.
    std::vector<uint8_t> bat(MiB);
    for (uint64_t first = 0; first < g.total_entries; first += MiB / 8) {
      uint64_t n = std::min<uint64_t>(MiB / 8, g.total_entries - first);
      std::memset(bat.data(), 0, bat.size());
      for (uint64_t i = 0; i < n; ++i) {
        uint64_t index = first + i;
        if (g.IsBitmapIndex(index)) continue;
        BatEntry e{kPayloadFullyPresent, payload_offset + g.BlockOfIndex(index) * o.block_size};
        EncodeFixed64(bat.data() + 8 * i, e.Encode());
      }
      VHDX_RETURN_IF_ERROR(file.WriteAt(kBatOffset + first * 8, bat.data(), n * 8));
    }
  }
  return file.Flush();
}

Status CreateImage(const std::string& path, const CreateOptions& options) {
  VHDX_RETURN_IF_ERROR(ValidateCreateOptions(options));
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST) return Status(Errc::kInvalidArgument, "already exists; not overwriting it");
    return Status(errno == ENOENT ? Errc::kNotFound : Errc::kIoError,
                  fmt::format("cannot create: {}", std::strerror(errno)));
  }
  ::close(fd);
  auto file = OpenPosixFile(path, /*writable=*/true, /*direct=*/false, FileLockMode::kWrite);
  Status st = file.ok() ? CreateImage(**file, options) : file.status();
  if (!st.ok()) ::unlink(path.c_str());
  return st;
}

}  // namespace vhdx
