#include "services/common/address_redaction.h"

#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace phi::common {
namespace {

bool IsWordBreak(char c) {
  return absl::ascii_isspace(static_cast<unsigned char>(c)) || c == ',' || c == ';' || c == '(' || c == ')' ||
         c == '"' || c == '\'' || c == '<' || c == '>' || c == '=';
}

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// 1.2.3.4: four groups of 1 to 3 digits.
bool IsDottedQuad(std::string_view s) {
  int groups = 0;
  while (true) {
    const size_t dot = s.find('.');
    const std::string_view group = s.substr(0, dot);
    if (!AllDigits(group) || group.size() > 3) return false;
    ++groups;
    if (dot == std::string_view::npos) break;
    s.remove_prefix(dot + 1);
  }
  return groups == 4;
}

// [2001:db8::1]: hex digits, ':' and '.' (an embedded IPv4) between brackets, a ':' among them.
bool IsBracketedIpv6(std::string_view s) {
  if (s.size() < 4 || s.front() != '[' || s.back() != ']') return false;
  const std::string_view inner = s.substr(1, s.size() - 2);
  for (char c : inner) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return false;
  }
  return inner.find(':') != std::string_view::npos;
}

// A DNS name with at least one letter (so that "3:5" is not an address), or localhost.
bool IsHostName(std::string_view s) {
  if (s.empty()) return false;
  bool letter = false;
  for (char c : s) {
    if (absl::ascii_isalpha(static_cast<unsigned char>(c))) {
      letter = true;
    } else if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
      return false;
    }
  }
  return letter;
}

bool IsAddress(std::string_view word) {
  static constexpr std::array<std::string_view, 6> kSchemes = {"ipv4:", "ipv6:", "unix:", "unix-abstract:", "dns:",
                                                               "vsock:"};
  for (std::string_view scheme : kSchemes) {
    if (absl::StartsWithIgnoreCase(absl::string_view(word.data(), word.size()),
                                   absl::string_view(scheme.data(), scheme.size())) &&
        word.size() > scheme.size()) {
      return true;
    }
  }
  if (IsDottedQuad(word) || IsBracketedIpv6(word)) return true;
  const size_t colon = word.rfind(':');
  if (colon == std::string_view::npos || !AllDigits(word.substr(colon + 1))) return false;
  const std::string_view host = word.substr(0, colon);
  return IsDottedQuad(host) || IsBracketedIpv6(host) || IsHostName(host);
}

}  // namespace

std::string RedactAddresses(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  size_t i = 0;
  while (i < message.size()) {
    if (IsWordBreak(message[i])) {
      out.push_back(message[i++]);
      continue;
    }
    size_t end = i;
    while (end < message.size() && !IsWordBreak(message[end])) ++end;
    std::string_view word = message.substr(i, end - i);
    // "ipv4:1.2.3.4:5:" and "host:port." end a clause; the punctuation stays.
    size_t keep = word.size();
    while (keep > 0 && (word[keep - 1] == ':' || word[keep - 1] == '.')) --keep;
    const std::string_view tail = word.substr(keep);
    word = word.substr(0, keep);
    if (IsAddress(word)) {
      out.append(kRedactedAddress);
      out.append(tail);
    } else {
      out.append(message.substr(i, end - i));
    }
    i = end;
  }
  return out;
}

}  // namespace phi::common
