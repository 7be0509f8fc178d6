# PHI_SANITIZE=address,undefined | thread ; set by the asan and tsan presets.
set(PHI_SANITIZE "" CACHE STRING "Comma-separated -fsanitize= list (address,undefined or thread)")
if(PHI_SANITIZE)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX,C>:-fsanitize=${PHI_SANITIZE}>
                      $<$<COMPILE_LANGUAGE:CXX,C>:-fno-omit-frame-pointer>
                      $<$<COMPILE_LANGUAGE:CXX,C>:-fno-sanitize-recover=all>)
  add_link_options(-fsanitize=${PHI_SANITIZE})
endif()
