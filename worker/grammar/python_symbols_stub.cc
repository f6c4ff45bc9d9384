// The CPython API symbols that llguidance's wheel library
// (llguidance/_lib.abi3.so, v1.8.0) refers to from its Python module entry
// point, which latentkv never calls: the library is linked with BIND_NOW, so
// the dynamic loader wants every one resolved before the C ABI can be used
// (worker/grammar/llguidance_library.h). Functions abort with a message if
// they were ever called; objects are zeroed storage nothing reads. No Python
// runtime is loaded. The list is `nm -D --undefined-only` of that file,
// filtered to Py*/_Py*.
#include <cstdio>
#include <cstdlib>

namespace {

static void Called(const char* name) {
  std::fprintf(
      stderr,
      "latentkv: llguidance called the CPython API (%s) outside Python\n",
      name);
  std::abort();
}

}  // namespace

extern "C" {

#define LATENTKV_PY_FUNCTION(name) \
  void name(void) { Called(#name); }
#define LATENTKV_PY_OBJECT(name) char name[512];

LATENTKV_PY_FUNCTION(PyByteArray_AsString)
LATENTKV_PY_FUNCTION(PyByteArray_Size)
LATENTKV_PY_FUNCTION(PyBytes_AsString)
LATENTKV_PY_FUNCTION(PyBytes_FromStringAndSize)
LATENTKV_PY_FUNCTION(PyBytes_Size)
LATENTKV_PY_FUNCTION(PyCMethod_New)
LATENTKV_PY_FUNCTION(PyDict_New)
LATENTKV_PY_FUNCTION(PyDict_Next)
LATENTKV_PY_FUNCTION(PyDict_Size)
LATENTKV_PY_FUNCTION(PyErr_Fetch)
LATENTKV_PY_FUNCTION(PyErr_GivenExceptionMatches)
LATENTKV_PY_FUNCTION(PyErr_NewExceptionWithDoc)
LATENTKV_PY_FUNCTION(PyErr_NormalizeException)
LATENTKV_PY_FUNCTION(PyErr_Occurred)
LATENTKV_PY_FUNCTION(PyErr_PrintEx)
LATENTKV_PY_FUNCTION(PyErr_Restore)
LATENTKV_PY_FUNCTION(PyErr_SetObject)
LATENTKV_PY_FUNCTION(PyErr_SetString)
LATENTKV_PY_FUNCTION(PyErr_WriteUnraisable)
LATENTKV_PY_FUNCTION(PyEval_RestoreThread)
LATENTKV_PY_FUNCTION(PyEval_SaveThread)
LATENTKV_PY_FUNCTION(PyException_SetCause)
LATENTKV_PY_FUNCTION(PyException_SetTraceback)
LATENTKV_PY_FUNCTION(PyFloat_AsDouble)
LATENTKV_PY_FUNCTION(PyGILState_Ensure)
LATENTKV_PY_FUNCTION(PyGILState_Release)
LATENTKV_PY_FUNCTION(PyImport_Import)
LATENTKV_PY_FUNCTION(PyIter_Next)
LATENTKV_PY_FUNCTION(PyList_Append)
LATENTKV_PY_FUNCTION(PyList_GetItem)
LATENTKV_PY_FUNCTION(PyList_New)
LATENTKV_PY_FUNCTION(PyList_SetItem)
LATENTKV_PY_FUNCTION(PyList_Size)
LATENTKV_PY_FUNCTION(PyLong_AsLong)
LATENTKV_PY_FUNCTION(PyLong_AsUnsignedLongLong)
LATENTKV_PY_FUNCTION(PyLong_FromLong)
LATENTKV_PY_FUNCTION(PyLong_FromSsize_t)
LATENTKV_PY_FUNCTION(PyLong_FromUnsignedLongLong)
LATENTKV_PY_FUNCTION(PyModuleDef_Init)
LATENTKV_PY_FUNCTION(PyModule_GetNameObject)
LATENTKV_PY_FUNCTION(PyNumber_Index)
LATENTKV_PY_FUNCTION(PyObject_Call)
LATENTKV_PY_FUNCTION(PyObject_CallObject)
LATENTKV_PY_FUNCTION(PyObject_DelItem)
LATENTKV_PY_FUNCTION(PyObject_GC_Track)
LATENTKV_PY_FUNCTION(PyObject_GC_UnTrack)
LATENTKV_PY_FUNCTION(PyObject_GenericSetDict)
LATENTKV_PY_FUNCTION(PyObject_GetAttr)
LATENTKV_PY_FUNCTION(PyObject_GetItem)
LATENTKV_PY_FUNCTION(PyObject_GetIter)
LATENTKV_PY_FUNCTION(PyObject_Repr)
LATENTKV_PY_FUNCTION(PyObject_SetAttr)
LATENTKV_PY_FUNCTION(PyObject_SetAttrString)
LATENTKV_PY_FUNCTION(PyObject_SetItem)
LATENTKV_PY_FUNCTION(PyObject_Size)
LATENTKV_PY_FUNCTION(PyObject_Str)
LATENTKV_PY_FUNCTION(PySequence_Check)
LATENTKV_PY_FUNCTION(PyTraceBack_Print)
LATENTKV_PY_FUNCTION(PyTuple_GetItem)
LATENTKV_PY_FUNCTION(PyTuple_New)
LATENTKV_PY_FUNCTION(PyTuple_SetItem)
LATENTKV_PY_FUNCTION(PyTuple_Size)
LATENTKV_PY_FUNCTION(PyType_FromSpec)
LATENTKV_PY_FUNCTION(PyType_GetFlags)
LATENTKV_PY_FUNCTION(PyType_GetSlot)
LATENTKV_PY_FUNCTION(PyType_IsSubtype)
LATENTKV_PY_FUNCTION(PyUnicode_AsEncodedString)
LATENTKV_PY_FUNCTION(PyUnicode_AsUTF8String)
LATENTKV_PY_FUNCTION(PyUnicode_FromStringAndSize)
LATENTKV_PY_FUNCTION(PyUnicode_InternInPlace)
LATENTKV_PY_FUNCTION(Py_DecRef)
LATENTKV_PY_FUNCTION(Py_GetVersion)
LATENTKV_PY_FUNCTION(Py_IncRef)
LATENTKV_PY_FUNCTION(Py_IsInitialized)

LATENTKV_PY_OBJECT(PyBaseObject_Type)
LATENTKV_PY_OBJECT(PyBool_Type)
LATENTKV_PY_OBJECT(PyByteArray_Type)
LATENTKV_PY_OBJECT(PyBytes_Type)
LATENTKV_PY_OBJECT(PyDict_Type)
LATENTKV_PY_OBJECT(PyExc_AttributeError)
LATENTKV_PY_OBJECT(PyExc_BaseException)
LATENTKV_PY_OBJECT(PyExc_OverflowError)
LATENTKV_PY_OBJECT(PyExc_RuntimeError)
LATENTKV_PY_OBJECT(PyExc_SystemError)
LATENTKV_PY_OBJECT(PyExc_TypeError)
LATENTKV_PY_OBJECT(PyExc_ValueError)
LATENTKV_PY_OBJECT(PyFloat_Type)
LATENTKV_PY_OBJECT(PyList_Type)
LATENTKV_PY_OBJECT(PyLong_Type)
LATENTKV_PY_OBJECT(PyModule_Type)
LATENTKV_PY_OBJECT(PyTuple_Type)
LATENTKV_PY_OBJECT(PyType_Type)
LATENTKV_PY_OBJECT(PyUnicode_Type)
LATENTKV_PY_OBJECT(_Py_FalseStruct)
LATENTKV_PY_OBJECT(_Py_NoneStruct)
LATENTKV_PY_OBJECT(_Py_TrueStruct)

}  // extern "C"
