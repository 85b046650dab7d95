// vhdx._vhdx.Disk: an open image (vhdx::Image) as Python sees it.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "common.h"
#include "vhdx/image.h"

namespace vhdx::py_binding {

class Disk {
 public:
  Disk(std::unique_ptr<Image> image, bool read_only) : image_(std::move(image)), read_only_(read_only) {}
  ~Disk();

  // Runs fn(Image&) -> Status with the GIL released, the image held open
  // (shared lock), and raises a failure. Image allows every member but
  // Close from many threads at once (image.h), so I/O calls share the
  // lock and run in parallel; close() takes it exclusively and so waits
  // for the calls in flight instead of closing the image under them.
  template <typename Fn>
  void Run(Fn&& fn) const {
    Status status;
    {
      py::gil_scoped_release nogil;
      std::shared_lock lock(mu_);
      status = image_ ? fn(*image_) : Status(Errc::kInvalidArgument, "I/O operation on a closed image");
    }
    ThrowIfError(status);
  }

  // For building Python objects from the image: with the GIL held (fn
  // makes Python objects) and the image held open. Waiting for mu_ with the
  // GIL held cannot deadlock: no holder of mu_ ever waits for the GIL.
  template <typename Fn>
  auto Inspect(Fn&& fn) const {
    std::shared_lock lock(mu_);
    if (!image_) RaiseStatus(Status(Errc::kInvalidArgument, "I/O operation on a closed image"));
    return fn(static_cast<const Image&>(*image_));
  }

  void Close();
  bool closed() const { return closed_.load(); }
  bool read_only() const { return read_only_; }

 private:
  mutable std::shared_mutex mu_;
  std::unique_ptr<Image> image_;
  bool read_only_;
  std::atomic<bool> closed_{false};
};

// info(): the fields of `vhdx info --output=json` (tools/vhdx/info.cc).
py::dict CheckReportDict(const CheckReport& report);
py::dict FindingDict(const CheckFinding& f);

}  // namespace vhdx::py_binding
