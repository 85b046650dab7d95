#include "url_file.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstring>

namespace vhdx_filter {

namespace {

// One easy handle per request: requests may come from many threads, and a
// parent is read rarely (structures once, then only what the child lacks).
struct Easy {
  CURL* h = curl_easy_init();
  ~Easy() {
    if (h) curl_easy_cleanup(h);
  }
};

struct Sink {
  uint8_t* buf;
  size_t want, got = 0;
  bool overflow = false;
};

size_t Write(char* data, size_t size, size_t count, void* user) {
  auto* s = static_cast<Sink*>(user);
  const size_t n = size * count;
  if (s->got + n > s->want) {
    s->overflow = true;
    return 0;  // more than the range asked for: abort the transfer
  }
  std::memcpy(s->buf + s->got, data, n);
  s->got += n;
  return n;
}

vhdx::Status CurlError(const std::string& url, const std::string& what) {
  return vhdx::Status(vhdx::Errc::kIoError, url + ": " + what);
}

}  // namespace

bool IsUrl(const std::string& s) { return s.starts_with("http://") || s.starts_with("https://"); }

vhdx::Result<std::unique_ptr<UrlFile>> UrlFile::Open(const std::string& url) {
  Easy e;
  if (!e.h) return vhdx::Status(vhdx::Errc::kNoMemory, "curl_easy_init failed");
  curl_easy_setopt(e.h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e.h, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(e.h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e.h, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(e.h, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(e.h, CURLOPT_NOSIGNAL, 1L);
  if (CURLcode c = curl_easy_perform(e.h); c != CURLE_OK) return CurlError(url, curl_easy_strerror(c));
  curl_off_t length = -1;
  curl_easy_getinfo(e.h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  if (length < 0) return CurlError(url, "the server gives no length for it");
  return std::unique_ptr<UrlFile>(new UrlFile(url, static_cast<uint64_t>(length)));
}

vhdx::Status UrlFile::Fetch(uint64_t offset, void* buf, size_t n) const {
  Easy e;
  if (!e.h) return vhdx::Status(vhdx::Errc::kNoMemory, "curl_easy_init failed");
  const std::string range = std::to_string(offset) + "-" + std::to_string(offset + n - 1);
  Sink sink{static_cast<uint8_t*>(buf), n};
  curl_easy_setopt(e.h, CURLOPT_URL, url_.c_str());
  curl_easy_setopt(e.h, CURLOPT_RANGE, range.c_str());
  curl_easy_setopt(e.h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e.h, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(e.h, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(e.h, CURLOPT_LOW_SPEED_LIMIT, 1L);  // stalled for a minute: give up
  curl_easy_setopt(e.h, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(e.h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e.h, CURLOPT_WRITEFUNCTION, Write);
  curl_easy_setopt(e.h, CURLOPT_WRITEDATA, &sink);
  const CURLcode c = curl_easy_perform(e.h);
  long status = 0;
  curl_easy_getinfo(e.h, CURLINFO_RESPONSE_CODE, &status);
  // A server that ignores ranges answers 200 with the whole file: that is
  // only the bytes asked for when the range was the whole file.
  if (sink.overflow || (status == 200 && !(offset == 0 && n == size_)))
    return CurlError(url_, "the server does not serve byte ranges");
  if (c != CURLE_OK) return CurlError(url_, std::string("range ") + range + ": " + curl_easy_strerror(c));
  if (sink.got != n)
    return CurlError(url_, "range " + range + ": " + std::to_string(sink.got) + " bytes received (the file changed?)");
  return vhdx::Status::Ok();
}

vhdx::Result<size_t> UrlFile::ReadAt(uint64_t offset, void* buf, size_t n) const {
  return reader_.Read(offset, buf, n);
}

}  // namespace vhdx_filter
