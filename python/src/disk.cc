// Disk: open, read, write, map, info, close. Every call into the library
// runs with the GIL released (Disk::Run), so Python threads reading one
// image (or different ones) proceed in parallel.
#include "disk.h"
#include "vhdx/json.h"

#include <Python.h>

#include <limits>
#include <utility>
#include <vector>

#include "vhdx/file.h"

namespace vhdx::py_binding {
namespace {

// A contiguous buffer of any buffer-protocol object (bytes, bytearray,
// memoryview, mmap, array, numpy), used in place: no copy. PyBUF_SIMPLE
// refuses non-contiguous views, and while the view is held a bytearray
// cannot be resized under the library's I/O (which runs without the GIL).
class BufferView {
 public:
  BufferView(py::handle obj, bool writable) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) != 0)
      throw py::error_already_set();
  }
  ~BufferView() { PyBuffer_Release(&view_); }  // destroyed with the GIL held
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
  void* data() const { return view_.buf; }
  size_t size() const { return static_cast<size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

std::unique_ptr<Disk> OpenDisk(py::handle path, bool readonly, py::handle parent_dirs, py::handle parent_path,
                               bool direct_io, bool force_share, bool ignore_parent_linkage, bool skip_parent) {
  OpenOptions options;
  options.read_only = readonly;
  options.direct_io = direct_io;
  options.force_share = force_share;
  options.ignore_parent_linkage = ignore_parent_linkage;
  options.skip_parent = skip_parent;
  options.parent_dirs = PathListArg(parent_dirs);
  if (!parent_path.is_none()) options.parent_path = PathArg(parent_path);
  const std::string file = PathArg(path);
  auto image = [&] {
    py::gil_scoped_release nogil;  // an open replays logs and walks the chain
    return Image::Open(file, options);
  }();
  return std::make_unique<Disk>(ValueOrRaise(std::move(image)), readonly);
}

py::bytes Read(const Disk& d, uint64_t offset, size_t n) {
  // The bytes object is filled in place: it is not shared until returned.
  PyObject* raw = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n));
  if (!raw) throw py::error_already_set();
  auto out = py::reinterpret_steal<py::bytes>(raw);
  char* p = PyBytes_AS_STRING(raw);
  d.Run([&](Image& image) { return image.Read(offset, p, n); });
  return out;
}

size_t ReadInto(const Disk& d, uint64_t offset, py::handle buffer) {
  BufferView view(buffer, /*writable=*/true);
  d.Run([&](Image& image) { return image.Read(offset, view.data(), view.size()); });
  return view.size();
}

size_t Write(Disk& d, uint64_t offset, py::handle data, bool fua) {
  BufferView view(data, /*writable=*/false);
  WriteOptions options;
  options.fua = fua;
  d.Run([&](Image& image) { return image.Write(offset, view.data(), view.size(), options); });
  return view.size();
}

// Up to `limit` extents from `start` (to `start + length`), for the Python
// generator Disk.map, which asks for them a batch at a time so that a map
// of millions of extents is never held whole.
py::list MapBatch(const Disk& d, uint64_t start, uint64_t length, size_t limit) {
  std::vector<MapExtent> extents;
  d.Run([&](Image& image) {
    return image.Map(start, length, [&](const MapExtent& e) {
      extents.push_back(e);
      return extents.size() < limit;
    });
  });
  py::list out;
  for (const MapExtent& e : extents)
    out.append(py::make_tuple(e.start, e.length, e.depth, e.present, e.zero, e.data,
                              e.offset ? py::cast(*e.offset) : py::none()));
  return out;
}

// The fields of `vhdx info --output=json`, as the CLI and the C API render
// them (include/vhdx/json.h): one rendering, parsed here.
py::dict Info(const Disk& d) {
  std::string text;
  d.Run([&](Image& img) -> Status {
    auto summary = SummarizeImage(img);
    if (!summary.ok()) return summary.status();
    text = InfoJson(*summary);
    return Status::Ok();
  });
  return py::module_::import("json").attr("loads")(text);
}

py::dict WriteStatsDict(const Disk& d) {
  WriteStats s = d.Inspect([](const Image& image) { return image.write_stats(); });
  py::dict out;
  out["flushes"] = s.flushes;
  out["log_entries"] = s.log_entries;
  out["blocks_allocated"] = s.blocks_allocated;
  out["blocks_released"] = s.blocks_released;
  out["header_updates"] = s.header_updates;
  return out;
}

uint64_t VirtualSize(const Disk& d) {
  return d.Inspect([](const Image& image) { return image.virtual_size(); });
}

}  // namespace

Disk::~Disk() {
  // Destroyed by the garbage collector with the GIL held; Image's
  // destructor closes a read-write image (flush, log applied) ignoring
  // errors, which may take time: let other threads run meanwhile.
  py::gil_scoped_release nogil;
  std::unique_lock lock(mu_);
  image_.reset();
}

void Disk::Close() {
  Status status;
  {
    py::gil_scoped_release nogil;
    std::unique_lock lock(mu_);
    if (!image_) return;  // closing twice is harmless, as for files
    status = image_->Close();
    closed_ = true;
    // Destroyed at once: the parents' read locks go too.
    image_.reset();
  }
  ThrowIfError(status);
}

void RegisterImage(py::module_& m) {
  py::class_<Disk>(m, "Disk", "An open VHDX image. Made by vhdx.open().")
      .def_property_readonly("closed", &Disk::closed)
      .def_property_readonly("read_only", &Disk::read_only)
      .def_property_readonly("virtual_size", &VirtualSize, "Size of the virtual disk in bytes.")
      .def("read", &Read, py::arg("offset"), py::arg("length"),
           "Reads `length` bytes of the virtual disk at `offset` (any alignment).")
      .def("readinto", &ReadInto, py::arg("offset"), py::arg("buffer"),
           "Reads len(buffer) bytes at `offset` into a writable buffer, in place. Returns the count.")
      .def("write", &Write, py::arg("offset"), py::arg("data"), py::kw_only(), py::arg("fua") = false,
           "Writes a bytes-like object at `offset`; fua=True makes it durable on return. Returns the count.")
      .def(
          "discard",
          [](Disk& d, uint64_t offset, uint64_t length) {
            d.Run([&](Image& image) { return image.Discard(offset, length); });
          },
          py::arg("offset"), py::arg("length"), "The range reads as zeros; whole blocks give back their space.")
      .def(
          "write_zeroes",
          [](Disk& d, uint64_t offset, uint64_t length, bool may_unmap) {
            d.Run([&](Image& image) { return image.WriteZeroes(offset, length, may_unmap); });
          },
          py::arg("offset"), py::arg("length"), py::kw_only(), py::arg("may_unmap") = false,
          "The range reads as zeros; may_unmap lets whole blocks of a dynamic image give back their space.")
      .def(
          "flush", [](Disk& d) { d.Run([](Image& image) { return image.Flush(); }); },
          "Makes every completed write durable.")
      .def(
          "prefetch",
          [](const Disk& d, uint64_t offset, uint64_t length) {
            d.Run([&](Image& image) {
              image.Prefetch(offset, length);
              return Status::Ok();
            });
          },
          py::arg("offset"), py::arg("length"), "Hints that the range will be read soon.")
      .def("_map_batch", &MapBatch, py::arg("start"), py::arg("length"), py::arg("limit"))
      .def("info", &Info, "What `vhdx info --output=json` shows, as a dict with the same keys.")
      .def("write_stats", &WriteStatsDict, "What the write path has done since the image was opened.")
      .def("close", &Disk::Close, "Flushes, applies the log and closes. Harmless when already closed.");

  m.def("_open", &OpenDisk, py::arg("path"), py::arg("readonly"), py::arg("parent_dirs"), py::arg("parent_path"),
        py::arg("direct_io"), py::arg("force_share"), py::arg("ignore_parent_linkage"), py::arg("skip_parent"));
}

}  // namespace vhdx::py_binding
