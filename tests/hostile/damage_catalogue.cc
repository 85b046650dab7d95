#include "hostile/damage_catalogue.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "format/constants.h"
#include "util/coding.h"

namespace vhdx::hostile {

using namespace format;

namespace {

constexpr uint64_t kHeaderOffsets[2] = {kHeader1Offset, kHeader2Offset};
constexpr uint64_t kRegionOffsets[2] = {kRegionTable1Offset, kRegionTable2Offset};

uint64_t EndOfFileMiB(const Layout& l) { return RoundUp(l.file_size, MiB); }

bool Clean(const Layout& l) { return !l.active_log; }
bool Dirty(const Layout& l) { return l.active_log.has_value(); }
bool HasPresentBlock(const Layout& l) {
  return Clean(l) && !l.BlocksInState(kPayloadFullyPresent).empty();
}
bool HasTwoPresentBlocks(const Layout& l) {
  return Clean(l) && l.BlocksInState(kPayloadFullyPresent).size() >= 2;
}
bool HasFreeMiB(const Layout& l) { return l.FreeMiB().has_value(); }

uint64_t FirstPresentIndex(const Layout& l) {
  return l.geo.PayloadIndex(l.BlocksInState(kPayloadFullyPresent).front());
}

// Sets the BAT entry of the first present block to `raw`.
std::function<void(Bytes&, const Layout&)> SetFirstPresent(
    std::function<uint64_t(const Layout&)> raw) {
  return [raw](Bytes& b, const Layout& l) { SetBatEntry(b, l, FirstPresentIndex(l), raw(l)); };
}

void FlipByte(Bytes& b, uint64_t offset) { b[offset] ^= 0x5A; }

// First byte after the metadata items, 8-aligned (room for a new item).
uint32_t FreeItemOffset(const Layout& l) {
  uint64_t end = kMetadataTableSize;
  for (const auto& e : l.meta.entries) end = std::max<uint64_t>(end, uint64_t{e.offset} + e.length);
  return static_cast<uint32_t>(RoundUp(end, 8));
}

MetadataEntry* Find(MetadataTable& t, const Guid& id) {
  for (auto& e : t.entries)
    if (e.item_id == id && !e.is_user()) return &e;
  throw std::runtime_error("metadata item missing from the base image");
}

std::function<void(Bytes&, const Layout&)> EditItemEntry(
    const Guid& id, std::function<void(MetadataEntry&, const Layout&)> edit) {
  return [id, edit](Bytes& b, const Layout& l) {
    EditMetadataTable(b, l, [&](MetadataTable& t) { edit(*Find(t, id), l); });
  };
}

std::function<void(Bytes&, const Layout&)> RemoveItem(const Guid& id) {
  return [id](Bytes& b, const Layout& l) {
    EditMetadataTable(b, l, [&](MetadataTable& t) {
      std::erase_if(t.entries, [&](const MetadataEntry& e) { return e.item_id == id; });
    });
  };
}

std::function<void(Bytes&, const Layout&)> AddUserItems(int count) {
  return [count](Bytes& b, const Layout& l) {
    EditMetadataTable(b, l, [&](MetadataTable& t) {
      for (int i = 0; i < count; ++i) {
        MetadataEntry e;
        e.item_id = TestGuid(0x40);
        e.item_id.bytes[0] = static_cast<uint8_t>(i);
        e.item_id.bytes[1] = static_cast<uint8_t>(i >> 8);
        e.flags = kMetaIsUser;  // empty items: offset and length 0
        t.entries.push_back(e);
      }
    });
  };
}

std::function<void(Bytes&, const Layout&)> PutItemU32(const Guid& id, uint64_t at, uint32_t value) {
  return [=](Bytes& b, const Layout& l) { PutU32(b, l.ItemOffset(id) + at, value); };
}
std::function<void(Bytes&, const Layout&)> PutItemU64(const Guid& id, uint64_t value) {
  return [=](Bytes& b, const Layout& l) { PutU64(b, l.ItemOffset(id), value); };
}

std::function<void(Bytes&, const Layout&)> EditRegions(
    std::function<void(RegionTable&, const Layout&)> edit) {
  return [edit](Bytes& b, const Layout& l) {
    EditBothRegionTables(b, l, [&](RegionTable& t) { edit(t, l); });
  };
}

RegionEntry& FindRegion(RegionTable& t, const Guid& id) {
  for (auto& r : t.entries)
    if (r.guid == id) return r;
  throw std::runtime_error("region missing from the base image");
}

std::function<void(Bytes&, const Layout&)> EditLog(
    std::function<void(LogEntryCopy&, const Layout&)> edit) {
  return [edit](Bytes& b, const Layout& l) {
    EditActiveLogEntry(b, l, [&](LogEntryCopy& e) { edit(e, l); });
  };
}

// Patches a field of the active log entry, then recomputes its checksum so
// that the field itself is what the reader has to catch.
std::function<void(Bytes&, const Layout&)> PatchLogEntry(
    uint64_t field, int width, std::function<uint64_t(const Layout&)> value) {
  return [=](Bytes& b, const Layout& l) {
    uint64_t at = ActiveLogEntryOffset(l) + field;
    if (width == 4)
      PutU32(b, at, static_cast<uint32_t>(value(l)));
    else
      PutU64(b, at, value(l));
    FixLogEntryChecksum(b, l);
  };
}

LogUpdate DataUpdate(uint64_t offset) {
  LogUpdate u;
  u.file_offset = offset;
  u.data.assign(kLogSectorSize, 0xEE);
  return u;
}

LogUpdate ZeroUpdate(uint64_t offset, uint64_t length) {
  LogUpdate u;
  u.file_offset = offset;
  u.is_zero = true;
  u.zero_length = length;
  return u;
}

std::function<void(Bytes&, const Layout&)> AddLogUpdate(
    std::function<LogUpdate(const Layout&)> update) {
  return EditLog([update](LogEntryCopy& e, const Layout& l) { e.updates.push_back(update(l)); });
}

std::function<void(Bytes&, const Layout&)> Truncate(std::function<uint64_t(const Layout&)> size) {
  return [size](Bytes& b, const Layout& l) { b.resize(size(l)); };
}

// The damage lists, by structure.
struct Add {
  std::vector<Damage>* out;
  void operator()(std::string name, Expect expect, std::function<void(Bytes&, const Layout&)> apply,
                  std::function<bool(const Layout&)> applies = nullptr) const {
    out->push_back({std::move(name), expect, std::move(apply), std::move(applies)});
  }
};
// Short names: the lists below read as a table.
constexpr Expect R = Expect::kReject, S = Expect::kAcceptSame, E = Expect::kEither,
                 C = Expect::kCheckOnly;

// --- control and file identifier -------------------------------------------
void AddFileDamage(const Add& add) {
  add("undamaged", S, [](Bytes&, const Layout&) {});
  add("file-signature", R, [](Bytes& b, const Layout&) { b[3] = 'X'; });
  add("file-signature-zero", R, [](Bytes& b, const Layout&) { std::fill_n(b.begin(), 8, 0); });
  add("creator-garbage", S, [](Bytes& b, const Layout&) { std::fill_n(b.begin() + 8, 512, 0xD8); });
  add("file-length-not-MiB-multiple", S, [](Bytes& b, const Layout&) { b.resize(b.size() + 512); });
}

// --- truncation ------------------------------------------------------------
void AddTruncations(const Add& add) {
  add("truncate-empty", R, Truncate([](const Layout&) { return 0; }));
  add("truncate-signature-only", R, Truncate([](const Layout&) { return 8; }));
  add("truncate-64KiB", R, Truncate([](const Layout&) { return 64 * KiB; }));
  add("truncate-under-1MiB", R, Truncate([](const Layout&) { return MiB - 1; }));
  add("truncate-at-1MiB", R, Truncate([](const Layout&) { return MiB; }));
  add("truncate-mid-log", R,
      Truncate([](const Layout& l) { return l.header().log_offset + 4 * KiB; }));
  add("truncate-mid-metadata", R,
      Truncate([](const Layout& l) { return l.metadata.file_offset + 32 * KiB; }));
  add("truncate-mid-bat", R, Truncate([](const Layout& l) { return l.bat.file_offset + 4 * KiB; }));
  add("truncate-mid-last-block", R, Truncate([](const Layout& l) {
        uint64_t last = 0;
        for (uint64_t b : l.BlocksInState(kPayloadFullyPresent))
          last = std::max(last, BatEntry::Decode(l.bat_entries[l.geo.PayloadIndex(b)]).file_offset);
        return last + 512 * KiB;
      }),
      HasPresentBlock);
}

// --- headers ---------------------------------------------------------------
void AddHeaderDamage(const Add& add) {
  add("header-current-signature", S,
      [](Bytes& b, const Layout& l) { b[kHeaderOffsets[l.current]] = 'H'; });
  add("header-current-checksum", S,
      [](Bytes& b, const Layout& l) { FlipByte(b, kHeaderOffsets[l.current] + 2000); });
  add("header-both-signature", R, [](Bytes& b, const Layout&) {
    b[kHeader1Offset] = 'H';
    b[kHeader2Offset] = 'H';
  });
  add("header-both-checksum", R, [](Bytes& b, const Layout&) {
    FlipByte(b, kHeader1Offset + 4);
    FlipByte(b, kHeader2Offset + 4);
  });
  add("header-current-version-2", S, [](Bytes& b, const Layout& l) {
    EditHeader(b, l, l.current, [](Header& h) { h.version = 2; });
  });
  add("header-both-version-2", R,
      [](Bytes& b, const Layout& l) { EditBothHeaders(b, l, [](Header& h) { h.version = 2; }); });
  add("header-both-version-0", R,
      [](Bytes& b, const Layout& l) { EditBothHeaders(b, l, [](Header& h) { h.version = 0; }); });
  add("header-equal-sequence-different-content", R, [](Bytes& b, const Layout& l) {
    EditHeader(b, l, 1 - l.current, [&](Header& h) {
      h.sequence_number = l.header().sequence_number;
      h.file_write_guid = TestGuid(1);
    });
  });
  add("header-equal-sequence-identical", S, [](Bytes& b, const Layout& l) {
    std::copy_n(b.begin() + kHeaderOffsets[l.current], kHeaderSize,
                b.begin() + kHeaderOffsets[1 - l.current]);
  });
  add("header-log-version-with-log-guid", R, [](Bytes& b, const Layout& l) {
    EditBothHeaders(b, l, [&](Header& h) {
      h.log_version = 1;
      if (h.log_guid.IsZero()) h.log_guid = TestGuid(2);
    });
  });
  add(
      "header-log-version-without-log-guid", S,
      [](Bytes& b, const Layout& l) {
        EditBothHeaders(b, l, [](Header& h) { h.log_version = 1; });
      },
      Clean);
  add("header-log-offset-misaligned", R, [](Bytes& b, const Layout& l) {
    EditBothHeaders(b, l, [](Header& h) { h.log_offset += 4 * KiB; });
  });
  add("header-log-length-misaligned", R, [](Bytes& b, const Layout& l) {
    EditBothHeaders(b, l, [](Header& h) { h.log_length += 4 * KiB; });
  });
  add("header-log-in-header-section", R, [](Bytes& b, const Layout& l) {
    EditBothHeaders(b, l, [](Header& h) { h.log_offset = 0; });
  });
  add("header-log-offset-overflows", R, [](Bytes& b, const Layout& l) {
    EditBothHeaders(b, l, [](Header& h) { h.log_offset = 0xFFFFFFFFFFF00000ull; });
  });
  add("header-log-overlaps-regions", R, [](Bytes& b, const Layout& l) {
    EditBothHeaders(b, l, [](Header& h) { h.log_length = 0xFFF00000u; });
  });
  add("header-dirty-log-past-eof", R, [](Bytes& b, const Layout& l) {
    EditBothHeaders(b, l, [&](Header& h) {
      h.log_offset = EndOfFileMiB(l);
      if (h.log_guid.IsZero()) h.log_guid = TestGuid(3);
    });
  });
  add(
      "header-clean-log-past-eof", E,
      [](Bytes& b, const Layout& l) {
        EditBothHeaders(b, l, [&](Header& h) { h.log_offset = EndOfFileMiB(l) + MiB; });
      },
      Clean);
  add("header-log-guid-without-entries", R, [](Bytes& b, const Layout& l) {
    EditBothHeaders(b, l, [](Header& h) { h.log_guid = TestGuid(4); });
  });
  add("header-log-guid-with-empty-log", R, [](Bytes& b, const Layout& l) {
    EditBothHeaders(b, l, [](Header& h) {
      h.log_guid = TestGuid(4);
      h.log_length = 0;
    });
  });
}

// --- region table ----------------------------------------------------------
void AddRegionTableDamage(const Add& add) {
  add("region-copy1-checksum", S,
      [](Bytes& b, const Layout&) { FlipByte(b, kRegionTable1Offset + 40000); });
  add("region-both-checksum", R, [](Bytes& b, const Layout&) {
    FlipByte(b, kRegionTable1Offset + 40000);
    FlipByte(b, kRegionTable2Offset + 40000);
  });
  add("region-copy1-signature", S, [](Bytes& b, const Layout&) { b[kRegionTable1Offset] = 'R'; });
  add("region-both-signature", R, [](Bytes& b, const Layout&) {
    b[kRegionTable1Offset] = 'R';
    b[kRegionTable2Offset] = 'R';
  });
  for (uint32_t count : {2048u, 0xFFFFFFFFu})
    add("region-entry-count-" + std::to_string(count), R, [count](Bytes& b, const Layout&) {
      for (int copy = 0; copy < 2; ++copy) {
        PutU32(b, kRegionOffsets[copy] + 8, count);
        FixRegionTableChecksum(b, copy);
      }
    });
  add("region-reserved-field-set", S, [](Bytes& b, const Layout&) {
    for (int copy = 0; copy < 2; ++copy) {
      PutU32(b, kRegionOffsets[copy] + 12, 1);
      FixRegionTableChecksum(b, copy);
    }
  });
  add("region-copy1-invalid-copy2-valid", S, [](Bytes& b, const Layout& l) {
    EditRegionTable(b, l, 0,
                    [](RegionTable& t) { FindRegion(t, kBatRegionGuid).file_offset += 4 * KiB; });
  });
  add("region-bat-offset-zero", R, EditRegions([](RegionTable& t, const Layout&) {
        FindRegion(t, kBatRegionGuid).file_offset = 0;
      }));
  add("region-bat-offset-misaligned", R, EditRegions([](RegionTable& t, const Layout&) {
        FindRegion(t, kBatRegionGuid).file_offset += 4 * KiB;
      }));
  add("region-metadata-offset-below-1MiB", R, EditRegions([](RegionTable& t, const Layout&) {
        FindRegion(t, kMetadataRegionGuid).file_offset = 512 * KiB;
      }));
  add("region-metadata-length-misaligned", R, EditRegions([](RegionTable& t, const Layout&) {
        FindRegion(t, kMetadataRegionGuid).length += 4 * KiB;
      }));
  add("region-bat-length-zero", R,
      EditRegions([](RegionTable& t, const Layout&) { FindRegion(t, kBatRegionGuid).length = 0; }));
  add("region-metadata-length-zero", R, EditRegions([](RegionTable& t, const Layout&) {
        FindRegion(t, kMetadataRegionGuid).length = 0;
      }));
  add("region-offset-overflows", R, EditRegions([](RegionTable& t, const Layout&) {
        FindRegion(t, kBatRegionGuid).file_offset = 0xFFFFFFFFFFF00000ull;
      }));
  add("region-length-wraps-offset", R, EditRegions([](RegionTable& t, const Layout&) {
        auto& r = FindRegion(t, kBatRegionGuid);
        r.file_offset = kMaxFileOffset;
        r.length = 0xFFF00000u;
      }));
  add("region-metadata-past-eof", R, EditRegions([](RegionTable& t, const Layout& l) {
        FindRegion(t, kMetadataRegionGuid).file_offset = EndOfFileMiB(l) + MiB;
      }));
  add("region-bat-straddles-eof", R, EditRegions([](RegionTable& t, const Layout& l) {
        auto& r = FindRegion(t, kBatRegionGuid);
        r.file_offset = EndOfFileMiB(l) - MiB;
        r.length = 2 * MiB;
      }));
  add("region-duplicate-guid", R, EditRegions([](RegionTable& t, const Layout&) {
        t.entries.push_back(FindRegion(t, kBatRegionGuid));
      }));
  add("region-missing-bat", R, EditRegions([](RegionTable& t, const Layout&) {
        std::erase_if(t.entries, [](const RegionEntry& r) { return r.guid == kBatRegionGuid; });
      }));
  add("region-missing-metadata", R, EditRegions([](RegionTable& t, const Layout&) {
        std::erase_if(t.entries,
                      [](const RegionEntry& r) { return r.guid == kMetadataRegionGuid; });
      }));
  add("region-bat-on-metadata", R, EditRegions([](RegionTable& t, const Layout& l) {
        FindRegion(t, kBatRegionGuid).file_offset = l.metadata.file_offset;
      }));
  add("region-partial-overlap", R, EditRegions([](RegionTable& t, const Layout& l) {
        bool bat_first = l.bat.file_offset < l.metadata.file_offset;
        auto& first = FindRegion(t, bat_first ? kBatRegionGuid : kMetadataRegionGuid);
        uint64_t second = bat_first ? l.metadata.file_offset : l.bat.file_offset;
        first.length = static_cast<uint32_t>(second - first.file_offset + MiB);
      }));
  add("region-bat-on-log", R, EditRegions([](RegionTable& t, const Layout& l) {
        FindRegion(t, kBatRegionGuid).file_offset = l.header().log_offset;
      }));
  for (uint32_t required : {1u, 2u})
    add("region-unknown-required-" + std::to_string(required), R,
        EditRegions([required](RegionTable& t, const Layout& l) {
          t.entries.push_back({TestGuid(5), EndOfFileMiB(l), static_cast<uint32_t>(MiB), required});
        }));
  add("region-unknown-optional", S, EditRegions([](RegionTable& t, const Layout& l) {
        t.entries.push_back({TestGuid(6), *l.FreeMiB(), static_cast<uint32_t>(MiB), 0});
      }),
      HasFreeMiB);
  add("region-unknown-optional-past-eof", R, EditRegions([](RegionTable& t, const Layout& l) {
        t.entries.push_back({TestGuid(6), EndOfFileMiB(l) + MiB, static_cast<uint32_t>(MiB), 0});
      }));
  add(
      "region-copies-differ", S,
      [](Bytes& b, const Layout& l) {
        EditRegionTable(b, l, 1, [&](RegionTable& t) {
          t.entries.push_back({TestGuid(6), *l.FreeMiB(), static_cast<uint32_t>(MiB), 0});
        });
      },
      HasFreeMiB);
}

// --- metadata table --------------------------------------------------------
void AddMetadataTableDamage(const Add& add) {
  add("metadata-signature", R, [](Bytes& b, const Layout& l) { b[l.metadata.file_offset] = 'M'; });
  for (uint16_t count : {uint16_t{2048}, uint16_t{0xFFFF}})
    add("metadata-entry-count-" + std::to_string(count), R,
        [count](Bytes& b, const Layout& l) { PutU16(b, l.metadata.file_offset + 10, count); });
  add("metadata-entry-count-zero", R,
      [](Bytes& b, const Layout& l) { PutU16(b, l.metadata.file_offset + 10, 0); });
  add("metadata-item-offset-in-table", R,
      EditItemEntry(kFileParametersGuid,
                    [](MetadataEntry& e, const Layout&) { e.offset = 0x8000; }));
  add("metadata-item-longer-than-1MiB", R,
      EditItemEntry(kVirtualDiskSizeGuid,
                    [](MetadataEntry& e, const Layout&) { e.length = MiB + 1; }));
  add("metadata-item-past-region", R,
      EditItemEntry(kVirtualDiskSizeGuid,
                    [](MetadataEntry& e, const Layout& l) { e.offset = l.metadata.length - 4; }));
  add("metadata-item-offset-wraps", R,
      EditItemEntry(kVirtualDiskSizeGuid, [](MetadataEntry& e, const Layout&) {
        e.offset = 0xFFFFFFF8u;
        e.length = 16;
      }));
  add("metadata-items-overlap", R, [](Bytes& b, const Layout& l) {
    EditMetadataTable(b, l, [&](MetadataTable& t) {
      Find(t, kVirtualDiskSizeGuid)->offset = Find(t, kFileParametersGuid)->offset + 4;
    });
  });
  add("metadata-duplicate-item", R, [](Bytes& b, const Layout& l) {
    EditMetadataTable(b, l, [&](MetadataTable& t) {
      MetadataEntry copy = *Find(t, kFileParametersGuid);
      copy.offset = FreeItemOffset(l);
      t.entries.push_back(copy);
    });
  });
  add("metadata-empty-item-with-offset", R,
      EditItemEntry(kVirtualDiskIdGuid, [](MetadataEntry& e, const Layout&) { e.length = 0; }));
  add("metadata-1024-user-items", S, AddUserItems(1024));
  add("metadata-1025-user-items", R, AddUserItems(1025));
  add("metadata-unknown-required-item", R, [](Bytes& b, const Layout& l) {
    EditMetadataTable(b, l, [&](MetadataTable& t) {
      t.entries.push_back({TestGuid(7), FreeItemOffset(l), 8, kMetaIsRequired});
    });
  });
  add("metadata-unknown-optional-item", S, [](Bytes& b, const Layout& l) {
    EditMetadataTable(b, l, [&](MetadataTable& t) {
      t.entries.push_back({TestGuid(7), FreeItemOffset(l), 8, 0});
    });
  });
  add("metadata-missing-file-parameters", R, RemoveItem(kFileParametersGuid));
  add("metadata-missing-virtual-disk-size", R, RemoveItem(kVirtualDiskSizeGuid));
  add("metadata-missing-logical-sector-size", R, RemoveItem(kLogicalSectorSizeGuid));
  // A reader can do without these two (digest §4.3; 7-Zip does).
  add("metadata-missing-physical-sector-size", S, RemoveItem(kPhysicalSectorSizeGuid));
  add("metadata-missing-virtual-disk-id", S, RemoveItem(kVirtualDiskIdGuid));
  add("metadata-virtual-size-item-too-short", R,
      EditItemEntry(kVirtualDiskSizeGuid, [](MetadataEntry& e, const Layout&) { e.length = 4; }));
  add("metadata-logical-sector-item-too-short", R,
      EditItemEntry(kLogicalSectorSizeGuid, [](MetadataEntry& e, const Layout&) { e.length = 2; }));
}

// --- metadata values -------------------------------------------------------
void AddMetadataValueDamage(const Add& add) {
  for (auto [name, size] :
       std::initializer_list<std::pair<const char*, uint32_t>>{{"zero", 0},
                                                               {"3MiB", 3 * MiB},
                                                               {"512KiB", 512 * KiB},
                                                               {"512MiB", 512 * MiB},
                                                               {"2GiB", 0x80000000u},
                                                               {"odd", 0x100001}})
    add(std::string("block-size-") + name, R, PutItemU32(kFileParametersGuid, 0, size));
  add("file-parameters-reserved-bit-2", R, [](Bytes& b, const Layout& l) {
    PutU32(b, l.ItemOffset(kFileParametersGuid) + 4, (l.params.leave_block_allocated ? 1 : 0) | 4);
  });
  add("file-parameters-reserved-bit-31", R, [](Bytes& b, const Layout& l) {
    PutU32(b, l.ItemOffset(kFileParametersGuid) + 4,
           (l.params.leave_block_allocated ? 1 : 0) | 0x80000000u);
  });
  add("has-parent-without-locator", R, [](Bytes& b, const Layout& l) {
    PutU32(b, l.ItemOffset(kFileParametersGuid) + 4, (l.params.leave_block_allocated ? 1 : 0) | 2);
  });
  add("virtual-size-zero", R, PutItemU64(kVirtualDiskSizeGuid, 0));
  add("virtual-size-over-64TiB", R, PutItemU64(kVirtualDiskSizeGuid, 64 * TiB + 4096));
  add("virtual-size-2^63", R, PutItemU64(kVirtualDiskSizeGuid, uint64_t{1} << 63));
  add("virtual-size-max", R, PutItemU64(kVirtualDiskSizeGuid, ~uint64_t{0}));
  add("virtual-size-not-sector-multiple", R, [](Bytes& b, const Layout& l) {
    PutU64(b, l.ItemOffset(kVirtualDiskSizeGuid), l.virtual_size - 256);
  });
  add("bat-region-too-small", R, PutItemU64(kVirtualDiskSizeGuid, 64 * TiB));
  for (uint32_t size : {0u, 1024u, 4097u, 0xFFFFFFFFu})
    add("logical-sector-size-" + std::to_string(size), R,
        PutItemU32(kLogicalSectorSizeGuid, 0, size));
  for (uint32_t size : {0u, 1000u, 8192u})
    add("physical-sector-size-" + std::to_string(size), R,
        PutItemU32(kPhysicalSectorSizeGuid, 0, size));
}

// --- BAT -------------------------------------------------------------------
void AddBatDamage(const Add& add) {
  for (uint64_t state : {4, 5})
    add("bat-reserved-state-" + std::to_string(state), R, SetFirstPresent([state](const Layout& l) {
          return (l.bat_entries[FirstPresentIndex(l)] & ~uint64_t{7}) | state;
        }),
        HasPresentBlock);
  add("bat-partially-present-without-parent", R,
      SetFirstPresent([](const Layout& l) { return l.bat_entries[FirstPresentIndex(l)] | 7; }),
      HasPresentBlock);
  add(
      "bat-present-at-offset-zero", R,
      [](Bytes& b, const Layout& l) { SetBatEntry(b, l, 0, kPayloadFullyPresent); }, Clean);
  add("bat-present-on-metadata", R, SetFirstPresent([](const Layout& l) {
        return l.metadata.file_offset | kPayloadFullyPresent;
      }),
      HasPresentBlock);
  add("bat-present-on-bat", R,
      SetFirstPresent([](const Layout& l) { return l.bat.file_offset | kPayloadFullyPresent; }),
      HasPresentBlock);
  add("bat-present-on-log", R,
      SetFirstPresent([](const Layout& l) { return l.header().log_offset | kPayloadFullyPresent; }),
      HasPresentBlock);
  add("bat-present-past-eof", R,
      SetFirstPresent([](const Layout& l) { return EndOfFileMiB(l) | kPayloadFullyPresent; }),
      HasPresentBlock);
  add("bat-present-straddles-eof", R, SetFirstPresent([](const Layout& l) {
        return (EndOfFileMiB(l) + MiB - l.geo.block_size) | kPayloadFullyPresent;
      }),
      [](const Layout& l) { return HasPresentBlock(l) && l.geo.block_size > MiB; });
  add("bat-offset-all-ones", R,
      SetFirstPresent([](const Layout&) { return 0xFFFFFFFFFFF00000ull | kPayloadFullyPresent; }),
      HasPresentBlock);
  add("bat-offset-2^63", R,
      SetFirstPresent([](const Layout&) { return (uint64_t{1} << 63) | kPayloadFullyPresent; }),
      HasPresentBlock);
  add("bat-reserved-bits-set", S, SetFirstPresent([](const Layout& l) {
        return l.bat_entries[FirstPresentIndex(l)] | 0xFFFF8ull;
      }),
      HasPresentBlock);
  add(
      "bat-zero-block-with-offset", S,
      [](Bytes& b, const Layout& l) {
        uint64_t block = l.BlocksInState(kPayloadZero).front();
        SetBatEntry(b, l, l.geo.PayloadIndex(block), (5 * MiB) | kPayloadZero);
      },
      [](const Layout& l) { return Clean(l) && !l.BlocksInState(kPayloadZero).empty(); });
  add(
      "bat-not-present-block-with-offset", S,
      [](Bytes& b, const Layout& l) {
        uint64_t block = l.BlocksInState(kPayloadNotPresent).front();
        SetBatEntry(b, l, l.geo.PayloadIndex(block), (5 * MiB) | kPayloadNotPresent);
      },
      [](const Layout& l) { return Clean(l) && !l.BlocksInState(kPayloadNotPresent).empty(); });
  for (uint64_t state : {kPayloadUndefined, kPayloadUnmapped})
    add(
        "bat-zero-block-as-state-" + std::to_string(state), S,
        [state](Bytes& b, const Layout& l) {
          uint64_t block = l.BlocksInState(kPayloadZero).front();
          SetBatEntry(b, l, l.geo.PayloadIndex(block), (7 * MiB) | state);
        },
        [](const Layout& l) { return Clean(l) && !l.BlocksInState(kPayloadZero).empty(); });
  add(
      "bat-unused-entries-garbage", S,
      [](Bytes& b, const Layout& l) {
        for (uint64_t i = l.geo.total_entries;
             i < l.geo.total_entries + 64 && (i + 1) * 8 <= l.bat.length; ++i)
          SetBatEntry(b, l, i, 0xFFFFFFFFFFF00005ull);
      },
      Clean);
  auto has_bitmap_slot = [](const Layout& l) {
    return l.geo.total_entries > l.geo.chunk_ratio &&
           !l.LogRewrites(l.bat.file_offset + 8 * l.geo.BitmapIndex(0));
  };
  add(
      "bat-sector-bitmap-present-without-parent", S,
      [](Bytes& b, const Layout& l) {
        SetBatEntry(b, l, l.geo.BitmapIndex(0), (9 * MiB) | kSectorBitmapPresent);
      },
      has_bitmap_slot);
  add(
      "bat-sector-bitmap-reserved-state", E,
      [](Bytes& b, const Layout& l) { SetBatEntry(b, l, l.geo.BitmapIndex(0), 3); },
      has_bitmap_slot);
  add(
      "bat-two-blocks-one-offset", C,
      [](Bytes& b, const Layout& l) {
        auto present = l.BlocksInState(kPayloadFullyPresent);
        SetBatEntry(b, l, l.geo.PayloadIndex(present[1]),
                    l.bat_entries[l.geo.PayloadIndex(present[0])]);
      },
      HasTwoPresentBlocks);
  add(
      "bat-blocks-overlap-partly", C,
      [](Bytes& b, const Layout& l) {
        auto present = l.BlocksInState(kPayloadFullyPresent);
        SetBatEntry(b, l, l.geo.PayloadIndex(present[1]),
                    l.bat_entries[l.geo.PayloadIndex(present[0])] + MiB);
      },
      [](const Layout& l) { return HasTwoPresentBlocks(l) && l.geo.block_size > MiB; });
}

// --- log (images whose log must be replayed) -------------------------------
void AddLogDamage(const Add& add) {
  add("log-entry-reserialised", S, EditLog([](LogEntryCopy&, const Layout&) {}), Dirty);
  add(
      "log-entry-erased", R,
      [](Bytes& b, const Layout& l) {
        std::fill_n(b.begin() + ActiveLogEntryOffset(l), kLogSectorSize, 0);
      },
      Dirty);
  add(
      "log-entry-checksum", R,
      [](Bytes& b, const Layout& l) { FlipByte(b, ActiveLogEntryOffset(l) + 4000); }, Dirty);
  add("log-entry-guid-stale", R,
      EditLog([](LogEntryCopy& e, const Layout&) { e.header.log_guid = TestGuid(9); }), Dirty);
  // Control for the patches below: a rewritten field with a recomputed
  // checksum is accepted when the value itself is fine.
  add("log-entry-patched-unchanged", S,
      PatchLogEntry(48, 8,
                    [](const Layout& l) { return l.active_log->header.flushed_file_offset; }),
      Dirty);
  add("log-entry-length-beyond-log", R,
      PatchLogEntry(8, 4, [](const Layout& l) { return l.header().log_length + kLogSectorSize; }),
      Dirty);
  add("log-entry-length-unaligned", R,
      PatchLogEntry(8, 4, [](const Layout& l) { return l.active_log->header.entry_length + 1; }),
      Dirty);
  add("log-entry-length-zero", R, PatchLogEntry(8, 4, [](const Layout&) { return 0; }), Dirty);
  add("log-entry-too-short-for-its-descriptors", R,
      PatchLogEntry(8, 4, [](const Layout&) { return kLogSectorSize; }), [](const Layout& l) {
        return Dirty(l) && l.active_log->header.entry_length > kLogSectorSize;
      });
  add("log-tail-beyond-log", R,
      PatchLogEntry(12, 4, [](const Layout& l) { return l.header().log_length; }), Dirty);
  add("log-tail-unaligned", R,
      PatchLogEntry(12, 4, [](const Layout& l) { return l.active_log->log_pos + 512; }), Dirty);
  add("log-tail-outside-sequence", R,
      PatchLogEntry(12, 4,
                    [](const Layout& l) {
                      return (l.active_log->log_pos + l.header().log_length / 2) %
                             l.header().log_length;
                    }),
      Dirty);
  add("log-sequence-zero", R,
      EditLog([](LogEntryCopy& e, const Layout&) { e.header.sequence_number = 0; }), Dirty);
  add("log-descriptor-count-beyond-entry", R,
      PatchLogEntry(24, 4, [](const Layout&) { return 1000; }), Dirty);
  add("log-descriptor-count-max", R,
      PatchLogEntry(24, 4, [](const Layout&) { return 0xFFFFFFFFu; }), Dirty);
  add("log-descriptor-signature", R, PatchLogEntry(64, 4, [](const Layout&) { return 0x63786564; }),
      [](const Layout& l) { return Dirty(l) && !l.active_log->updates.empty(); });
  add("log-descriptor-sequence", R,
      PatchLogEntry(64 + 24, 8,
                    [](const Layout& l) { return l.active_log->header.sequence_number + 1; }),
      [](const Layout& l) { return Dirty(l) && !l.active_log->updates.empty(); });
  add("log-data-sector-signature", R,
      PatchLogEntry(kLogSectorSize, 4, [](const Layout&) { return 0x61746164 ^ 1; }),
      [](const Layout& l) {
        return Dirty(l) && !l.active_log->updates.empty() && !l.active_log->updates[0].is_zero;
      });
  add("log-data-sector-sequence", R,
      PatchLogEntry(2 * kLogSectorSize - 4, 4,
                    [](const Layout& l) {
                      return static_cast<uint32_t>(l.active_log->header.sequence_number) + 1;
                    }),
      [](const Layout& l) {
        return Dirty(l) && !l.active_log->updates.empty() && !l.active_log->updates[0].is_zero;
      });
  for (uint64_t target : {uint64_t{0}, kHeader1Offset, kHeader2Offset + 8 * KiB})
    add("log-target-in-headers-" + std::to_string(target), R,
        AddLogUpdate([target](const Layout&) { return DataUpdate(target); }), Dirty);
  add("log-target-in-log", R,
      AddLogUpdate([](const Layout& l) { return DataUpdate(l.header().log_offset + 64 * KiB); }),
      Dirty);
  add("log-target-unaligned", R,
      AddLogUpdate([](const Layout& l) { return DataUpdate(l.metadata.file_offset + 0x10100); }),
      Dirty);
  // Logged updates of the region table are legitimate (digest §3.4).
  add(
      "log-target-region-table-unchanged", S,
      [](Bytes& b, const Layout& l) {
        LogUpdate u;
        u.file_offset = kRegionTable1Offset;
        u.data.assign(b.begin() + kRegionTable1Offset,
                      b.begin() + kRegionTable1Offset + kLogSectorSize);
        EditActiveLogEntry(b, l, [&](LogEntryCopy& e) { e.updates.push_back(u); });
      },
      Dirty);
  add("log-zero-length-huge", R,
      AddLogUpdate([](const Layout&) { return ZeroUpdate(64 * MiB, uint64_t{1} << 62); }), Dirty);
  add("log-zero-length-wraps", R,
      AddLogUpdate([](const Layout&) { return ZeroUpdate(uint64_t{1} << 63, uint64_t{1} << 63); }),
      Dirty);
  add("log-zero-length-unaligned", R,
      AddLogUpdate([](const Layout&) { return ZeroUpdate(64 * MiB, 100); }), Dirty);
  add("log-zero-far-beyond-eof", S,
      AddLogUpdate([](const Layout&) { return ZeroUpdate(TiB, GiB); }), Dirty);
  add("log-last-file-offset-absurd", R, EditLog([](LogEntryCopy& e, const Layout&) {
        e.header.last_file_offset = uint64_t{1} << 63;
      }),
      Dirty);
  add("log-last-file-offset-1TiB", S,
      EditLog([](LogEntryCopy& e, const Layout&) { e.header.last_file_offset = TiB; }), Dirty);
  add("log-flushed-offset-beyond-file", R, EditLog([](LogEntryCopy& e, const Layout& l) {
        e.header.flushed_file_offset = l.file_size + MiB;
      }),
      Dirty);
  add("log-flushed-offset-equals-file", S,
      EditLog([](LogEntryCopy& e, const Layout& l) { e.header.flushed_file_offset = l.file_size; }),
      Dirty);
}

}  // namespace

std::vector<Damage> DamageCatalogue() {
  std::vector<Damage> d;
  const Add add{&d};
  for (auto group : {AddFileDamage, AddTruncations, AddHeaderDamage, AddRegionTableDamage,
                     AddMetadataTableDamage, AddMetadataValueDamage, AddBatDamage, AddLogDamage})
    group(add);
  return d;
}

}  // namespace vhdx::hostile
