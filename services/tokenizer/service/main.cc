// phi-tokenizer: main() stays small; everything lives in phi_tokenizer_service.
#include "services/tokenizer/service/tokenizer_service.h"

int main(int argc, char** argv) { return phi::tokenizer::TokenizerMain(argc, argv); }
