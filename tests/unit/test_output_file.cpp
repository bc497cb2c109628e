// dho2::write_output_file, dho2::output_stream and dho2::resolve_output (dho2/io/output_file.hpp):
// a regular file is replaced atomically keeping its mode and owner, a new file gets the umask's
// mode, a symbolic link is followed and stays a link, a character device and a FIFO are written
// directly and stay what they are, a directory, a socket or a missing directory is refused
// naming the label and the path with nothing changed, a write error (/dev/full) is reported
// naming the file and the cause, and two spellings of one file resolve to the same identity.
#include <dho2/checkpoint/file.hpp>
#include <dho2/io/output_file.hpp>

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

namespace {

namespace fs = std::filesystem;

fs::path test_root() {
  return fs::temp_directory_path() / ("dho2_output_file_test_" + std::to_string(::getpid()));
}
const struct remove_test_root {
  remove_test_root() = default;
  remove_test_root(const remove_test_root&) = delete;
  remove_test_root& operator=(const remove_test_root&) = delete;
  ~remove_test_root() {
    std::error_code ec;
    fs::remove_all(test_root(), ec);
  }
} remove_test_root_at_exit;

fs::path fresh_dir(std::string_view name) {
  const fs::path dir = test_root() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void put(const fs::path& p, std::string_view text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

struct stat lstat_of(const fs::path& p) {
  struct stat st {};
  REQUIRE_MESSAGE(::lstat(p.c_str(), &st) == 0, "expected '", p.string(), "' to exist");
  return st;
}

unsigned mode_of(const fs::path& p) { return lstat_of(p).st_mode & 07777U; }

mode_t current_umask() {
  const mode_t m = ::umask(0);
  ::umask(m);
  return m;
}

// The message of the output_error `f()` throws, or "" if it throws none.
template <class F>
std::string output_error_of(F&& f) {
  try {
    f();
  } catch (const dho2::output_error& e) {
    return e.what();
  }
  return {};
}

bool has_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
  }
  return false;
}

// A character device of this test's own (a copy of /dev/null made with mknod when running as
// root), so that a regression cannot replace the system's /dev/null; /dev/null itself otherwise
// (a user who is not root cannot replace it).
fs::path null_device(const fs::path& dir) {
  if (::geteuid() == 0) {
    const fs::path p = dir / "null";
    if (::mknod(p.c_str(), S_IFCHR | 0666, ::makedev(1, 3)) == 0) return p;
  }
  return "/dev/null";
}

}  // namespace

TEST_CASE("output file: a new file is created atomically with the umask's mode") {
  const fs::path dir = fresh_dir("new");
  const fs::path f = dir / "out.json";
  dho2::write_output_file(f, std::string_view("{}\n"), "--summary-json");
  INFO("expected: the content written, mode 0666 & ~umask, no temporary file left");
  CHECK(read_all(f) == "{}\n");
  CHECK(mode_of(f) == (0666U & ~static_cast<unsigned>(current_umask())));
  CHECK_FALSE(has_temp_files(dir));
}

TEST_CASE("output file: a regular file is replaced atomically, keeping its mode and owner") {
  const fs::path dir = fresh_dir("regular");
  const fs::path f = dir / "secret.json";
  put(f, "old content that is longer than the new one\n");
  REQUIRE(::chmod(f.c_str(), 0600) == 0);
  const bool root = ::geteuid() == 0;
  if (root) REQUIRE(::chown(f.c_str(), 4321, 4322) == 0);
  const ino_t before = lstat_of(f).st_ino;
  dho2::write_output_file(f, std::string_view("new\n"), "--summary-json");
  const struct stat after = lstat_of(f);
  INFO("expected: the new content, mode 0600 kept, a new inode (renamed over), no temp file");
  CHECK(read_all(f) == "new\n");
  CHECK((after.st_mode & 07777U) == 0600U);
  CHECK(after.st_ino != before);
  CHECK_FALSE(has_temp_files(dir));
  if (root) {
    INFO("expected: the owner 4321:4322 kept (running as root)");
    CHECK(after.st_uid == 4321U);
    CHECK(after.st_gid == 4322U);
  }
}

TEST_CASE("output file: a symbolic link is followed and stays a link") {
  const fs::path dir = fresh_dir("symlink");
  fs::create_directories(dir / "real");
  put(dir / "real" / "target.json", "old\n");
  REQUIRE(::chmod((dir / "real" / "target.json").c_str(), 0640) == 0);
  fs::create_symlink("real/target.json", dir / "link.json");  // relative to the link's directory
  fs::create_symlink("link.json", dir / "link2.json");        // a chain of two links
  dho2::write_output_file(dir / "link2.json", std::string_view("new\n"), "--save-parameters");
  INFO("expected: both links still links, the final target holds the content, mode 0640 kept");
  CHECK(S_ISLNK(lstat_of(dir / "link.json").st_mode));
  CHECK(S_ISLNK(lstat_of(dir / "link2.json").st_mode));
  CHECK(read_all(dir / "real" / "target.json") == "new\n");
  CHECK(mode_of(dir / "real" / "target.json") == 0640U);
  CHECK_FALSE(has_temp_files(dir / "real"));
  CHECK_FALSE(has_temp_files(dir));

  SUBCASE("a dangling link: its target is created, the link stays") {
    fs::create_symlink("real/absent.json", dir / "dangling.json");
    dho2::write_output_file(dir / "dangling.json", std::string_view("made\n"), "--log");
    CHECK(S_ISLNK(lstat_of(dir / "dangling.json").st_mode));
    CHECK(read_all(dir / "real" / "absent.json") == "made\n");
  }
  SUBCASE("a loop of links is refused naming the label and the path") {
    fs::create_symlink("loop_b", dir / "loop_a");
    fs::create_symlink("loop_a", dir / "loop_b");
    const std::string m = output_error_of(
        [&] { dho2::write_output_file(dir / "loop_a", std::string_view("x"), "--log"); });
    INFO("expected: \"--log '<path>'\" and a mention of the symbolic links; got '", m, "'");
    CHECK(m.find("--log '" + (dir / "loop_a").string() + "'") != std::string::npos);
    CHECK(m.find("symbolic links") != std::string::npos);
  }
}

TEST_CASE("output file: a character device is written directly and stays a device") {
  const fs::path dir = fresh_dir("device");
  const fs::path dev = null_device(dir);
  const dho2::output_target t = dho2::resolve_output(dev, "--summary-json");
  CHECK(t.kind == dho2::output_kind::character_device);
  dho2::write_output_file(dev, std::string_view("discarded\n"), "--summary-json");
  INFO("expected: '", dev.string(), "' still a character device, no temporary file beside it");
  CHECK(S_ISCHR(lstat_of(dev).st_mode));
  CHECK_FALSE(has_temp_files(dev.parent_path()));
  {
    dho2::output_stream s(dev, "--log");
    s.write("row\n");
    s.close();
  }
  CHECK(S_ISCHR(lstat_of(dev).st_mode));

  SUBCASE("a checkpoint file refuses it") {
    const std::string m = output_error_of([&] {
      dho2::write_output_file(dev, std::string_view("x"), "checkpoint file",
                              {.allow_streams = false});
    });
    INFO("expected: refused as a character device; got '", m, "'");
    CHECK(m.find("checkpoint file '" + dev.string() + "': is a character device") !=
          std::string::npos);
  }
}

TEST_CASE("output file: a write error on /dev/full names the file and the cause") {
  if (!fs::exists("/dev/full")) return;
  REQUIRE(S_ISCHR(lstat_of("/dev/full").st_mode));
  const std::string whole = output_error_of(
      [] { dho2::write_output_file("/dev/full", std::string_view("x\n"), "--summary-json"); });
  INFO("expected: \"--summary-json '/dev/full': write failed: No space left on device\"; got '",
       whole, "'");
  CHECK(whole == "--summary-json '/dev/full': write failed: No space left on device");
  const std::string piece = output_error_of([] {
    dho2::output_stream s("/dev/full", "--eval-log");
    s.write("row\n");
  });
  INFO("expected: \"--eval-log '/dev/full': write failed: ...\"; got '", piece, "'");
  CHECK(piece.find("--eval-log '/dev/full': write failed: No space left") == 0);
  CHECK(S_ISCHR(lstat_of("/dev/full").st_mode));
}

TEST_CASE("output file: a FIFO is written directly and stays a FIFO") {
  const fs::path dir = fresh_dir("fifo");
  const fs::path fifo = dir / "pipe";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::string received;
  std::thread reader([&] { received = read_all(fifo); });  // opening waits for the writer
  dho2::write_output_file(fifo, std::string_view("through the pipe\n"), "--summary-json");
  reader.join();
  INFO("expected: the reader got the content; the FIFO is still a FIFO; no temporary file");
  CHECK(received == "through the pipe\n");
  CHECK(S_ISFIFO(lstat_of(fifo).st_mode));
  CHECK_FALSE(has_temp_files(dir));
}

TEST_CASE("output file: a directory, a socket, a missing directory are refused, nothing changed") {
  const fs::path dir = fresh_dir("refused");
  fs::create_directories(dir / "sub");
  put(dir / "sub" / "keep", "kept");
  const std::string m = output_error_of(
      [&] { dho2::write_output_file(dir / "sub", std::string_view("x"), "--summary-json"); });
  INFO("expected: \"--summary-json '<dir>/sub': is a directory; ...\"; got '", m, "'");
  CHECK(m.find("--summary-json '" + (dir / "sub").string() + "': is a directory") == 0);
  CHECK(fs::is_directory(dir / "sub"));
  CHECK(read_all(dir / "sub" / "keep") == "kept");
  CHECK_FALSE(has_temp_files(dir));
  const std::string ms = output_error_of([&] { dho2::output_stream s(dir / "sub", "--log"); });
  INFO("expected: the stream refuses the directory too; got '", ms, "'");
  CHECK(ms.find("--log '" + (dir / "sub").string() + "': is a directory") == 0);

  const fs::path sock = dir / "socket";
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (sock.string().size() < sizeof addr.sun_path) {
    std::memcpy(addr.sun_path, sock.c_str(), sock.string().size() + 1);
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    const std::string mk =
        output_error_of([&] { dho2::write_output_file(sock, std::string_view("x"), "--log"); });
    INFO("expected: refused as a socket; got '", mk, "'");
    CHECK(mk.find("is a socket") != std::string::npos);
    CHECK(S_ISSOCK(lstat_of(sock).st_mode));
  }
  ::close(fd);

  const std::string md = output_error_of([&] {
    dho2::write_output_file(dir / "absent" / "f.json", std::string_view("x"), "--summary-json");
  });
  INFO("expected: the missing directory named; got '", md, "'");
  CHECK(md.find("directory '" + (dir / "absent").string() + "' does not exist") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(dir / "absent"));
}

TEST_CASE("output file: a file with other hard links is written in place, keeping the links") {
  const fs::path dir = fresh_dir("hardlink");
  put(dir / "a", "old\n");
  fs::create_hard_link(dir / "a", dir / "b");
  dho2::write_output_file(dir / "a", std::string_view("new\n"), "--log");
  INFO("expected: both names see the new content (one file, two links)");
  CHECK(read_all(dir / "b") == "new\n");
  CHECK(fs::hard_link_count(dir / "a") == 2U);
}

TEST_CASE("output file: a failure before the rename leaves the target untouched") {
  const fs::path dir = fresh_dir("hook");
  put(dir / "f", "old");
  fs::path temp;
  CHECK_THROWS_AS(dho2::write_output_file(dir / "f", std::string_view("new"), "--log",
                                          {.before_rename =
                                               [&](const fs::path& t) {
                                                 temp = t;
                                                 throw std::runtime_error("simulated crash");
                                               }}),
                  std::runtime_error);
  INFO("expected: the old content and no temporary file");
  CHECK(read_all(dir / "f") == "old");
  CHECK_FALSE(temp.empty());
  CHECK_FALSE(fs::exists(temp));
}

TEST_CASE("output file: a stream truncates a regular file and writes each piece at once") {
  const fs::path dir = fresh_dir("stream");
  put(dir / "log.csv", "old content, longer than what follows\n");
  REQUIRE(::chmod((dir / "log.csv").c_str(), 0600) == 0);
  fs::create_symlink("log.csv", dir / "link.csv");
  dho2::output_stream s(dir / "link.csv", "--eval-log");
  CHECK(read_all(dir / "log.csv").empty());
  s.write("a,b\n");
  INFO("expected: the piece on disk before close, through the link; mode 0600 kept");
  CHECK(read_all(dir / "log.csv") == "a,b\n");
  s.write("1,2\n");
  s.close();
  CHECK(read_all(dir / "log.csv") == "a,b\n1,2\n");
  CHECK(S_ISLNK(lstat_of(dir / "link.csv").st_mode));
  CHECK(mode_of(dir / "log.csv") == 0600U);
}

TEST_CASE("output file: the same file under two spellings has one identity") {
  const fs::path dir = fresh_dir("identity");
  put(dir / "a.json", "x");
  fs::create_symlink("a.json", dir / "link.json");
  const auto a = dho2::resolve_output(dir / "a.json", "--summary-json");
  const auto dot = dho2::resolve_output(dir / "." / "a.json", "--save-parameters");
  const auto link = dho2::resolve_output(dir / "link.json", "--log");
  INFO("expected: a.json, ./a.json and a link to it are one file");
  CHECK(a.same_file_as(dot));
  CHECK(a.same_file_as(link));
  CHECK(a.kind == dho2::output_kind::regular_file);
  fs::create_directories(dir / "sub");
  const auto n1 = dho2::resolve_output(dir / "new.csv", "--log");
  const auto n2 = dho2::resolve_output(dir / "sub" / ".." / "new.csv", "--eval-log");
  const auto n3 = dho2::resolve_output(dir / "other.csv", "--eval-log");
  CHECK(n1.kind == dho2::output_kind::new_file);
  INFO("expected: new.csv and sub/../new.csv (not yet created) are one file, other.csv another");
  CHECK(n1.same_file_as(n2));
  CHECK_FALSE(n1.same_file_as(n3));
  CHECK_FALSE(n1.same_file_as(a));
}

TEST_CASE("output file: a checkpoint written through a link replaces the link's target") {
  const fs::path dir = fresh_dir("checkpoint_link");
  fs::create_directories(dir / "store");
  dho2::checkpoint_writer w(
      {.n = 1, .world_size = 1, .rank = 0, .layout_hash = 0, .options_hash = 0, .step = 3});
  w.write(dir / "store" / "f.dho2ckpt");
  fs::create_symlink("store/f.dho2ckpt", dir / "f.dho2ckpt");
  w.write(dir / "f.dho2ckpt");
  INFO("expected: the link kept, the target a valid checkpoint");
  CHECK(S_ISLNK(lstat_of(dir / "f.dho2ckpt").st_mode));
  CHECK(dho2::checkpoint_reader(dir / "f.dho2ckpt").identity().step == 3);
  fs::create_directories(dir / "in_the_way");
  CHECK_THROWS_WITH_AS(w.write(dir / "in_the_way"), doctest::Contains("is a directory"),
                       dho2::checkpoint_error);
}
