// SmolLM2's ChatML chat template (as its GGUF and tokenizer_config.json
// carry it), rendered by the HTTP targets after a request parses.
#ifndef LATENTKV_TESTS_FUZZ_CHATML_H_
#define LATENTKV_TESTS_FUZZ_CHATML_H_

namespace latentkv::fuzz {

inline constexpr char kChatMlTemplate[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] "
    "!= 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant "
    "named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif "
    "%}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

}  // namespace latentkv::fuzz

#endif  // LATENTKV_TESTS_FUZZ_CHATML_H_
