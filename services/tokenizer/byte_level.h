// GPT-2's reversible byte <-> printable-character map (the ByteLevel pre-tokenizer and decoder).
// ref: openai/gpt-2 encoder.py bytes_to_unicode; Hugging Face tokenizers ByteLevel.
#ifndef PHI_SERVICES_TOKENIZER_BYTE_LEVEL_H_
#define PHI_SERVICES_TOKENIZER_BYTE_LEVEL_H_

#include <string>
#include <string_view>

namespace phi::tokenizer {

// The character that stands for byte b in vocabulary strings.
char32_t ByteToChar(unsigned char b);

// The byte that character c stands for, or -1 when c is not one of the 256 byte characters.
int CharToByte(char32_t c);

// Bytes a vocabulary string stands for, as the Hugging Face ByteLevel decoder computes them:
// when every character of `token` (valid UTF-8) is a byte character, the mapped bytes; otherwise
// the token's own UTF-8 bytes (added tokens such as "<|im_end|>" or runs of spaces).
std::string ByteLevelTokenBytes(std::string_view token);

// The vocabulary string for raw bytes (each byte mapped to its character, UTF-8 encoded).
std::string BytesToByteLevelString(std::string_view bytes);

}  // namespace phi::tokenizer

#endif  // PHI_SERVICES_TOKENIZER_BYTE_LEVEL_H_
