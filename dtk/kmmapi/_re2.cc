// dtk's binding of RE2 for KMM's kernelMappings regexps (dtk/kmmapi/goregexp.py), built
// against the system's libre2 by the Debian package: Debian 12 ships libre2 but no Python
// binding of it, and google-re2 (PyPI) bundles its own copy. dtk needs two calls: compile
// a pattern (or say why RE2 refuses it) and search a kernel release with it.
#include <memory>
#include <stdexcept>
#include <string>

#include <pybind11/pybind11.h>
#include <re2/re2.h>

namespace {

class Regexp {
 public:
  explicit Regexp(const std::string& pattern) {
    RE2::Options options;  // RE2's defaults: UTF-8, Perl classes, leftmost-first, as Go
    options.set_log_errors(false);  // the reason is raised, not printed on stderr
    re_ = std::make_unique<RE2>(pattern, options);
    if (!re_->ok()) {
      throw std::invalid_argument(re_->error());  // pybind11 raises it as ValueError
    }
  }

  // Unanchored, as Go's regexp.MatchString (what KMM's kernel mapper calls).
  bool search(const std::string& text) const { return RE2::PartialMatch(text, *re_); }

  const std::string& pattern() const { return re_->pattern(); }

 private:
  std::unique_ptr<RE2> re_;
};

}  // namespace

PYBIND11_MODULE(_re2, module) {
  module.doc() = "RE2 (the system's libre2) for KMM's kernelMappings regexps";
  pybind11::class_<Regexp>(module, "Regexp")
      .def(pybind11::init<const std::string&>(), pybind11::arg("pattern"))
      .def("search", &Regexp::search, pybind11::arg("text"))
      .def_property_readonly("pattern", &Regexp::pattern);
}
